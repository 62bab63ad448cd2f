import Foundation
import KalavaraHTTP
import Synchronization
import TestSupport
import XCTest

/// With two standbys, one never shows a write the other may still answer without: a read on
/// a standby of a key whose write the other standby has not confirmed waits for it.
final class MasterGroupVisibilityTests: XCTestCase {
    private var group: GroupCluster!

    override func tearDown() {
        if let group, (testRun?.failureCount ?? 0) > 0 {
            try? group.cluster.logText().write(toFile: "/tmp/kalavara-\(name.filter { $0.isLetter || $0.isNumber }).log", atomically: true, encoding: .utf8)
        }
        group?.shutdown()
        group = nil
    }

    /// A write is pending while standby 2 is stopped: standby 1 holds it, and its reads and
    /// listings of that key wait until standby 2 confirms it, then show it, as does standby 2.
    /// A listing on the leader waits for the write too.
    func testAStandbyShowsNoWriteAnotherStandbyMayStillAnswerWithout() throws {
        group = try GroupCluster(masters: 3, leaseTTL: 6, syncTimeout: 4)
        try group.start(0)
        XCTAssertEqual(try group.waitForLeader(among: [0]), 0)
        try group.waitForVolumes(on: 0)
        try group.start(1)
        try group.start(2)
        try group.waitInSync(1, leader: 0)
        try group.waitInSync(2, leader: 0)
        try group.waitForVolumes(on: 1)
        XCTAssertEqual(try group.put("before", Array("old".utf8), via: 0).status, 201)
        XCTAssertEqual(try group.get("before", via: 1).text, "old")

        group.signal(2, SIGSTOP)
        let url0 = group.url(0), url1 = group.url(1)
        let group = self.group!
        let written = Mutex<(status: Int, at: Double)?>(nil)
        let writer = Thread {
            let answer = try? group.put("pending", Array("new".utf8), via: 0)
            written.withLock { $0 = (answer?.status ?? 0, Date().timeIntervalSince1970) }
        }
        writer.start()
        // Standby 1 has fetched and applied the write well within this (its polls are back to back).
        usleep(600_000)
        let read = Mutex<(status: Int, text: String, at: Double)?>(nil)
        let listed = Mutex<(status: Int, text: String)?>(nil)
        let reader = Thread {
            let answer = try? HTTP.send("GET", url1 + "/store/pending", timeout: 15)
            read.withLock { $0 = (answer?.status ?? 0, answer.map { $0.headers["Location"] ?? $0.text } ?? "", Date().timeIntervalSince1970) }
        }
        let lister = Thread {
            let answer = try? HTTP.send("GET", url1 + "/store/?prefix=pend", timeout: 15)
            listed.withLock { $0 = (answer?.status ?? 0, answer?.text ?? "") }
        }
        let leaderListed = Mutex<String?>(nil)
        let leaderLister = Thread {
            let answer = try? HTTP.send("GET", url0 + "/store/?prefix=pend", timeout: 15)
            leaderListed.withLock { $0 = answer?.text ?? "" }
        }
        reader.start()
        lister.start()
        leaderLister.start()
        usleep(700_000)
        XCTAssertNil(read.withLock { $0 }, "standby 1 answered a read of a write standby 2 does not hold yet")
        XCTAssertNil(listed.withLock { $0 }, "standby 1 listed a key standby 2 does not hold yet")
        XCTAssertNil(leaderListed.withLock { $0 }, "the leader listed a key whose write is not acknowledged")
        XCTAssertNil(written.withLock { $0 }, "the write was acknowledged while an in-sync standby was stopped")
        // The other keys are answered at once.
        XCTAssertEqual(try HTTP.send("GET", url1 + "/store/before", timeout: 2).status, 302)

        group.signal(2, SIGCONT)
        let deadline = Date().addingTimeInterval(15)
        while read.withLock({ $0 }) == nil || listed.withLock({ $0 }) == nil || written.withLock({ $0 }) == nil
              || leaderListed.withLock({ $0 }) == nil, Date() < deadline {
            usleep(20_000)
        }
        XCTAssertEqual(written.withLock { $0 }?.status, 201)
        let answer = try XCTUnwrap(read.withLock { $0 })
        XCTAssertEqual(answer.status, 302, answer.text)
        XCTAssertTrue(answer.text.contains("/store/pending"), answer.text)
        XCTAssertEqual(listed.withLock { $0 }?.status, 200)
        XCTAssertTrue(listed.withLock { $0 }?.text.contains("pending") == true, listed.withLock { $0 }?.text ?? "")
        XCTAssertTrue(leaderListed.withLock { $0 }?.contains("pending") == true)
        XCTAssertEqual(try group.get("pending", via: 1).text, "new")
        try group.waitInSync(2, leader: 0)
        XCTAssertEqual(try group.get("pending", via: 2).text, "new")
    }
}
