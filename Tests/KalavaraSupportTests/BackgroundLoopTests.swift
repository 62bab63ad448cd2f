import CEpoll
import Foundation
@testable import KalavaraSupport
import Synchronization
import XCTest

/// `BackgroundLoop`, the shape of every background loop. No test asserts how long anything
/// took: on a busy two-core machine any time can stretch. Deadlines are only upper bounds
/// on waiting for something that must happen.
final class BackgroundLoopTests: XCTestCase {
    /// Waits, polling, until `condition` holds; fails after a generous deadline.
    private func waitUntil(_ what: String, timeout: Double = 30, _ condition: () -> Bool,
                           file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            guard Date() < deadline else { return XCTFail("timed out waiting for \(what)", file: file, line: line) }
            usleep(1000)
        }
    }

    func testWakesBeforeARoundCoalesceIntoOneAndDuringOneIntoOneMore() {
        let gate = DispatchSemaphore(value: 0)
        let rounds = Count()
        let loop = BackgroundLoop("test-coalesce", schedule: .onWake)
        for _ in 0..<5 { loop.wake() } // before the first round (even before start): one round
        loop.start {
            if rounds.add() == 1 { gate.wait() }
        }
        waitUntil("the first round") { rounds.value == 1 }
        for _ in 0..<10 { loop.wake() } // during the round: one more round
        gate.signal()
        waitUntil("the second round to end") { loop.progress.rounds == 2 }
        loop.stop()
        XCTAssertEqual(rounds.value, 2)
        XCTAssertEqual(loop.progress.rounds, 2)
        XCTAssertFalse(loop.progress.running)
    }

    func testStopWaitsForTheRoundInFlight() {
        let entered = Count(), finished = Count()
        let loop = BackgroundLoop("test-stop", schedule: .onWake)
        loop.start {
            entered.add()
            // Ends only once stop has been asked for: stop must then wait for this.
            while !loop.isStopping { usleep(1000) }
            usleep(20_000)
            finished.add()
        }
        loop.wake()
        waitUntil("the round to start") { entered.value > 0 }
        XCTAssertTrue(loop.progress.running)
        loop.stop()
        XCTAssertTrue(finished.value > 0)
        XCTAssertFalse(loop.progress.running)
        XCTAssertEqual(loop.progress.rounds, 0, "a round a stop came during does not count as finished")
        loop.stop() // idempotent
        loop.wake() // nothing runs any more
        loop.start { XCTFail("a stopped loop does not start again") }
    }

    func testStopWithoutStartReturnsAndStartAfterwardsDoesNothing() {
        let loop = BackgroundLoop("test-unstarted", schedule: .every(0.001))
        loop.stop()
        loop.stop()
        loop.start { XCTFail("a stopped loop does not start") }
        loop.wake()
        XCTAssertEqual(loop.progress.rounds, 0)
    }

    func testIntervalRoundsHappenAndAreStampedByTheInjectedClock() {
        for schedule in [BackgroundLoop<Int>.Schedule.every(0.005), .pausing(0.005)] {
            let loop = BackgroundLoop("test-interval", schedule: schedule, status: 0, wallClock: { 1_234_567 })
            loop.start { loop.report { $0 += 1 } }
            waitUntil("three rounds") { loop.progress.rounds >= 3 }
            loop.stop()
            let progress = loop.progress
            XCTAssertEqual(progress.lastRoundFinished, 1_234_567)
            XCTAssertGreaterThanOrEqual(progress.status, progress.rounds) // a round stopped midway is not counted
            let after = progress.status
            usleep(20_000)
            XCTAssertEqual(loop.status, after, "no round after stop")
        }
    }

    func testAnEnormousIntervalIsWaitedOutNotATrap() {
        let loop = BackgroundLoop("test-enormous", schedule: .pausing(1e300))
        loop.start {}
        loop.wake()
        waitUntil("the woken round") { loop.progress.rounds == 1 }
        XCTAssertTrue(loop.pause(0.001))
        loop.stop()
    }

    func testOnceRunsOneRoundAndEnds() {
        let loop = BackgroundLoop("test-once", schedule: .once)
        let rounds = Count()
        loop.start { rounds.add() }
        waitUntil("the round") { loop.progress.rounds == 1 }
        loop.wake()
        loop.stop()
        XCTAssertEqual(rounds.value, 1)
    }

    func testARoundThatThrowsDoesNotEndTheLoop() {
        struct Failure: Error {}
        let calls = Count()
        let loop = BackgroundLoop("test-throws", schedule: .onWake)
        loop.start {
            if calls.add() == 1 { throw Failure() }
        }
        loop.wake()
        waitUntil("the failing round") { calls.value == 1 && !loop.progress.running }
        XCTAssertEqual(loop.progress.rounds, 0, "a round that threw is not counted as finished")
        loop.wake()
        waitUntil("the next round") { loop.progress.rounds == 1 }
        loop.stop()
        XCTAssertEqual(calls.value, 2)
    }

    func testStopFromItsOwnRoundDoesNotWaitForItself() {
        let loop = BackgroundLoop("test-self-stop", schedule: .onWake)
        let returned = Count()
        loop.start {
            loop.stop()
            returned.add()
        }
        loop.wake()
        waitUntil("the round's own stop to return") { returned.value > 0 }
        loop.stop()
        XCTAssertTrue(loop.isStopping)
    }

    func testPauseEndsAtStopAndWakeAfterComesDue() {
        let loop = BackgroundLoop("test-pause", schedule: .onWake, status: true)
        loop.start {
            let unstopped = loop.pause(3600)
            loop.report { $0 = unstopped }
        }
        loop.wake(after: 0.01)
        waitUntil("the round to be pausing") { loop.progress.running }
        loop.stop() // would wait an hour if the pause did not end
        XCTAssertFalse(loop.status, "pause says the loop was stopped")
    }

    func testIdleRoundsRunInTheIdleClass() {
        let loop = BackgroundLoop("test-idle", schedule: .once, idle: true, status: Scheduling())
        loop.start {
            // 0: the calling thread, for sched_getscheduler(2) as for getpriority(2) given its thread id.
            let policy = sched_getscheduler(0)
            let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(kalavara_thread_id()))
            loop.report { $0 = Scheduling(policy: policy, nice: nice) }
        }
        waitUntil("the round") { loop.progress.rounds == 1 }
        let scheduling = loop.status
        XCTAssertTrue(scheduling.policy == 5 /* SCHED_IDLE */ || scheduling.nice == 19, "\(scheduling)")
    }
}

/// A counter the test and a loop's round share.
private final class Count: Sendable {
    private let atomic = Atomic(0)
    @discardableResult
    func add() -> Int { atomic.add(1, ordering: .relaxed).newValue }
    var value: Int { atomic.load(ordering: .relaxed) }
}

private struct Scheduling: Sendable, Equatable {
    var policy: Int32 = -1
    var nice: Int32 = 0
}
