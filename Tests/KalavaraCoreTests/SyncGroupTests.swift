import Foundation
@testable import KalavaraCore
import Synchronization
import XCTest

/// Concurrent writers' log syncs grouped: fewer syncs than writers, and no writer returns
/// before a sync that started after its write ended.
final class SyncGroupTests: XCTestCase {
    func testConcurrentWritersShareSyncsAndEachReturnsCovered() throws {
        let group = SyncGroup()
        let log = Mutex<(end: UInt64, durable: UInt64, syncs: Int)>((0, 0, 0))
        let writers = 16, writesEach = 50
        let violations = Atomic(0)
        let done = DispatchGroup()
        // Threads of their own: concurrentPerform runs only as many at once as there are cores.
        for _ in 0..<writers {
            done.enter()
            Thread {
                defer { done.leave() }
                for _ in 0..<writesEach {
                    let sequence = log.withLock { $0.end += 1; return $0.end }
                    try? group.sync(through: sequence, latest: { log.withLock { $0.end } }) {
                        let end = log.withLock { $0.end }
                        usleep(2_000) // an fsync
                        log.withLock { $0.durable = max($0.durable, end); $0.syncs += 1 }
                    }
                    if log.withLock({ $0.durable }) < sequence { violations.add(1, ordering: .relaxed) }
                }
            }.start()
        }
        done.wait()
        XCTAssertEqual(violations.load(ordering: .relaxed), 0, "a writer returned before its write was durable")
        let syncs = log.withLock { $0.syncs }
        XCTAssertLessThan(syncs, writers * writesEach / 2, "syncs were not grouped: \(syncs) for \(writers * writesEach) writes")
    }

    func testAFailedSyncFailsEveryWriteItWasToCover() throws {
        let group = SyncGroup()
        struct DiskFull: Error {}
        var end: UInt64 = 2
        XCTAssertThrowsError(try group.sync(through: 1, latest: { end }) { throw DiskFull() })
        // Sequence 2 was logged before that sync started: a later sync that succeeds does
        // not make it durable (the pages the failed fsync lost are gone).
        XCTAssertThrowsError(try group.sync(through: 2, latest: { end }) { XCTFail("no sync for a write already lost") })
        end = 3
        var ran = false
        try group.sync(through: 3, latest: { end }) { ran = true }
        XCTAssertTrue(ran, "a write after the failure gets a sync of its own")
        ran = false
        try group.sync(through: 3, latest: { end }) { ran = true }
        XCTAssertFalse(ran, "already durable: no sync")
    }
}
