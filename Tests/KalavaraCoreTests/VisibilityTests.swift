import Foundation
@testable import KalavaraCore
import KalavaraSupport
import Synchronization
import XCTest

/// With two or more standbys, a standby shows a write only once every other master that
/// answers reads holds it: the leader's *visible through* mark, and the standby's fence.
final class VisibilityTests: XCTestCase {
    private let directory = NSTemporaryDirectory() + "kalavara-visibility-" + UUID().uuidString

    override func setUpWithError() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    /// The batches a leader's log holds for these writes, one batch each.
    private func batches(_ writes: [(key: String, delete: Bool)]) throws -> [ReplicatedBatch] {
        let db = try RocksDB(path: directory + "/source")
        for write in writes {
            if write.delete { try db.delete(Array(write.key.utf8), sync: false) } else { try db.put(Array(write.key.utf8), [1], sync: false) }
        }
        return try db.logTail(from: 1).read(maxBytes: 1 << 20)
    }

    func testABatchNamesTheKeysItPutsAndDeletes() throws {
        let log = try batches([("a", false), ("b", true), ("c", false)])
        XCTAssertEqual(log.map { $0.keys.map { String(decoding: $0, as: UTF8.self) } }, [["a"], ["b"], ["c"]])
    }

    func testKeysBeyondTheMarkWaitForAMarkThatPassesThem() throws {
        let log = try batches([("a", false), ("b", false), ("c", true)])
        let fence = VisibilityFence(patience: 5)
        // Visible through the first batch: the other two are fenced.
        fence.willApply(log, visibleThrough: log[0].next - 1)
        fence.advance(to: log[0].next - 1)
        XCTAssertNil(fence.firstFenced([Array("a".utf8)]))
        XCTAssertEqual(fence.firstFenced([Array("a".utf8), Array("c".utf8), Array("b".utf8)]), Array("c".utf8))
        XCTAssertEqual(fence.count, 2)

        // A reader waits; a mark through the second batch releases "b" but not "c".
        let released = Atomic(false)
        let reader = Thread {
            if fence.waitForRelease(of: Array("b".utf8), until: monotonicSeconds() + 5) { released.store(true, ordering: .relaxed) }
        }
        reader.start()
        usleep(100_000)
        XCTAssertFalse(released.load(ordering: .relaxed), "released before any mark passed it")
        fence.advance(to: log[1].next - 1)
        let deadline = Date().addingTimeInterval(2)
        while !released.load(ordering: .relaxed), Date() < deadline { usleep(5_000) }
        XCTAssertTrue(released.load(ordering: .relaxed))
        XCTAssertEqual(fence.firstFenced([Array("b".utf8), Array("c".utf8)]), Array("c".utf8))
        XCTAssertFalse(fence.waitForRelease(of: Array("c".utf8), until: monotonicSeconds() + 0.1), "the deadline is kept")
        // An older mark never fences again what a newer one released.
        fence.advance(to: 0)
        XCTAssertEqual(fence.count, 1)
        fence.clear()
        XCTAssertEqual(fence.count, 0)
    }

    /// A checkpoint holds the leader's latest writes: every key waits for a mark that
    /// reaches the checkpoint's sequence.
    func testEveryKeyWaitsAfterACheckpointUntilAMarkReachesIt() throws {
        let fence = VisibilityFence(patience: 5)
        fence.fenceEveryKey(through: .max)
        XCTAssertEqual(fence.firstFenced([Array("any".utf8)]), Array("any".utf8), "fenced while the copy is made")
        fence.fenceEveryKey(through: 40)
        fence.advance(to: 39)
        XCTAssertNotNil(fence.firstFenced([Array("any".utf8)]))
        XCTAssertFalse(fence.waitForRelease(of: Array("any".utf8), until: monotonicSeconds() + 0.05))
        fence.advance(to: 40)
        XCTAssertNil(fence.firstFenced([Array("any".utf8)]))
        XCTAssertEqual(fence.lastMark, 40)
        // A new leader's mark may be lower: it is taken as it is.
        fence.advance(to: 12)
        XCTAssertEqual(fence.lastMark, 12)
    }

    func testWithOneStandbyNothingIsFenced() throws {
        let log = try batches([("a", false)])
        let fence = VisibilityFence(patience: 5)
        fence.willApply(log, visibleThrough: .max)
        XCTAssertEqual(fence.count, 0)
    }

    private func leader(syncTimeout: Double) throws -> (RocksDB, LogShipping) {
        let db = try RocksDB(path: directory + "/leader")
        return (db, LogShipping(db: db, syncTimeout: syncTimeout, recordSet: { _ in }))
    }

    /// The mark sent to each standby is what every *other* standby holds.
    func testAStandbysMarkIsWhatTheOtherStandbyHolds() throws {
        let (db, shipping) = try leader(syncTimeout: 5)
        try db.put(Array("a".utf8), [1], sync: true)
        let start = db.latestSequence + 1
        // Alone, a standby may show the whole log.
        XCTAssertEqual(try shipping.poll(member: "http://s:1", from: start).visibleThrough, db.latestSequence)
        XCTAssertEqual(try shipping.poll(member: "http://s:2", from: start).visibleThrough, db.latestSequence)

        try db.put(Array("b".utf8), [2], sync: true)
        let written = db.latestSequence
        // s:1 fetches and holds the write; s:2 has not confirmed it: s:1 may not show it.
        let fetched = try shipping.poll(member: "http://s:1", from: written)
        XCTAssertEqual(fetched.batches.map(\.sequence), [written])
        XCTAssertEqual(fetched.visibleThrough, written - 1)
        let held = Mutex<(mark: UInt64, at: Double)?>(nil)
        let waiting = Thread {
            // Holding the write, with nothing new in the log: answered when the mark moves.
            if let answer = try? shipping.poll(member: "http://s:1", from: written + 1) {
                held.withLock { $0 = (answer.visibleThrough, monotonicSeconds()) }
            }
        }
        let asked = monotonicSeconds()
        waiting.start()
        usleep(100_000)
        XCTAssertNil(held.withLock { $0 }, "answered before the mark moved")
        // s:2 confirms it: s:1's waiting poll is answered at once with the new mark.
        _ = try shipping.poll(member: "http://s:2", from: written + 1)
        let deadline = Date().addingTimeInterval(2)
        while held.withLock({ $0 }) == nil, Date() < deadline { usleep(5_000) }
        let answer = try XCTUnwrap(held.withLock { $0 })
        XCTAssertEqual(answer.mark, written)
        XCTAssertLessThan(answer.at - asked, LogShipping.pollWait, "the mark was sent when it moved, not after the poll's wait")
    }

    /// A standby dropped from the set may answer reads for half a sync timeout after: the
    /// others show nothing it lacks until then. So does a new leader's first half timeout.
    func testADroppedStandbyAndATakeoverHoldTheMark() throws {
        let (db, shipping) = try leader(syncTimeout: 0.4)
        try db.put(Array("a".utf8), [1], sync: true)
        let start = db.latestSequence + 1
        _ = try shipping.poll(member: "http://s:1", from: start)
        _ = try shipping.poll(member: "http://s:2", from: start)
        try db.put(Array("b".utf8), [2], sync: true)
        let written = db.latestSequence
        _ = try shipping.poll(member: "http://s:1", from: written + 1) // holds it (the poll then waits its half second)
        // s:2 is silent: after the sync timeout it is dropped and the write settles. (Each
        // poll below asks again for the last batch, so it is answered at once.)
        try shipping.settle(through: written)
        XCTAssertEqual(try shipping.poll(member: "http://s:1", from: written).visibleThrough, written - 1,
                       "shown while the dropped standby may still answer reads")
        // A poll with nothing new is answered when that hold ends (0.2 s), not after its wait.
        let asked = monotonicSeconds()
        XCTAssertEqual(try shipping.poll(member: "http://s:1", from: written + 1).visibleThrough, written)
        XCTAssertLessThan(monotonicSeconds() - asked, LogShipping.pollWait - 0.1)

        shipping.holdVisibility(at: written, for: 0.3)
        try db.put(Array("c".utf8), [3], sync: true)
        let latest = db.latestSequence
        XCTAssertEqual(try shipping.poll(member: "http://s:1", from: latest).visibleThrough, written, "held after a takeover")
        usleep(350_000)
        XCTAssertEqual(try shipping.poll(member: "http://s:1", from: latest).visibleThrough, latest)
    }
}
