import Foundation
@testable import KalavaraCore
import KalavaraHTTP
import Synchronization
import XCTest

/// The master group's own logic, without etcd: epoch histories, who may lead, checkpoint
/// file names, and the leader's waiting on its standbys (`LogShipping`) on a real RocksDB.
final class MasterGroupLogicTests: XCTestCase {
    private let directory = NSTemporaryDirectory() + "kalavara-group-" + UUID().uuidString

    override func setUpWithError() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    func testAnEpochHistoryRoundTripsAndRefusesDamagedBytes() {
        let history = EpochHistory(epochs: [(1, 0), (2, 40), (5, 90)])
        XCTAssertEqual(EpochHistory(encoded: history.encoded), history)
        XCTAssertEqual(history.current, 5)
        XCTAssertEqual(EpochHistory(encoded: []), EpochHistory())
        for cut in 1..<history.encoded.count where cut % 16 != 0 {
            XCTAssertNil(EpochHistory(encoded: Array(history.encoded.prefix(cut))), "cut at \(cut)")
        }
    }

    func testAMemberHoldsAPrefixOnlyIfItStoppedBeforeTheNextEpochBegan() {
        // Epoch 1 from the start, epoch 2 after sequence 40, epoch 5 after 90; the log ends at 120.
        let history = EpochHistory(epochs: [(1, 0), (2, 40), (5, 90)])
        XCTAssertTrue(history.holdsPrefix(epoch: 5, last: 120, latest: 120), "current epoch, caught up")
        XCTAssertTrue(history.holdsPrefix(epoch: 5, last: 100, latest: 120), "current epoch, behind")
        XCTAssertFalse(history.holdsPrefix(epoch: 5, last: 121, latest: 120), "ahead of the leader: it holds writes the leader never made")
        XCTAssertTrue(history.holdsPrefix(epoch: 1, last: 40, latest: 120), "followed epoch 1 up to where epoch 2 began")
        XCTAssertFalse(history.holdsPrefix(epoch: 1, last: 41, latest: 120), "went on in epoch 1 past where epoch 2 began")
        XCTAssertTrue(history.holdsPrefix(epoch: 2, last: 90, latest: 120))
        XCTAssertFalse(history.holdsPrefix(epoch: 2, last: 95, latest: 120), "a former leader's unacknowledged writes")
        XCTAssertFalse(history.holdsPrefix(epoch: 3, last: 10, latest: 120), "an epoch this history never had")
        XCTAssertFalse(history.holdsPrefix(epoch: 9, last: 10, latest: 120), "an epoch after this history's")
    }

    func testOnlyTheRecordedLeaderAndItsInSyncStandbysMayLead() {
        let record = SyncRecord(epoch: 3, leader: "http://a:1", members: ["http://b:1"])
        XCTAssertTrue(record.mayLead("http://a:1"))
        XCTAssertTrue(record.mayLead("http://b:1"))
        XCTAssertFalse(record.mayLead("http://c:1"))
    }

    func testACheckpointNamesOnlyFilesNeverPaths() {
        for name in ["000012.sst", "MANIFEST-000005", "OPTIONS-000007", "CURRENT", "000009.log", "1767000000000"] {
            XCTAssertTrue(CheckpointManifest.isSafe(name), name)
        }
        for name in ["", ".", "..", "../db", "a/b", "/etc/passwd", "x\0y", String(repeating: "a", count: 129), "é"] {
            XCTAssertFalse(CheckpointManifest.isSafe(name), name)
        }
    }

    // MARK: A standby's copy

    func testAStandbyTakesTheLeadersCheckpointInPlaceOfItsIndex() throws {
        let leader = try RocksDB(path: directory + "/leader")
        for n in 0..<50 { try leader.put(Array("k\(n)".utf8), Array("v\(n)".utf8), sync: false) }
        let standby = try RocksDB(path: directory + "/standby")
        try standby.put(Array("stale".utf8), [1], sync: true)
        let sequence = try leader.checkpoint(into: directory + "/standby/incoming")
        try standby.replaceContents(with: directory + "/standby/incoming")
        XCTAssertEqual(standby.latestSequence, sequence)
        XCTAssertNil(try standby.get(Array("stale".utf8)), "what the standby held is gone")
        XCTAssertEqual(try standby.get(Array("k49".utf8)), Array("v49".utf8))
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/standby/incoming"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/standby/" + RocksDB.replacingMarker))
        // It goes on from there as the leader's log does.
        try leader.put(Array("next".utf8), [2], sync: true)
        let tail = try leader.logTail(from: sequence + 1)
        try standby.apply(try tail.read(maxBytes: 1 << 20), sync: true)
        XCTAssertEqual(try standby.get(Array("next".utf8)), [2])
    }

    func testACopyCutShortByACrashLeavesAnEmptyIndexToCopyAgain() throws {
        let path = directory + "/standby"
        do {
            let standby = try RocksDB(path: path)
            try standby.put(Array("half".utf8), [1], sync: true)
            standby.close()
        }
        // What a crash between deleting the old files and moving the new ones in leaves.
        _ = FileManager.default.createFile(atPath: path + "/" + RocksDB.replacingMarker, contents: nil)
        let reopened = try RocksDB(path: path)
        XCTAssertNil(try reopened.get(Array("half".utf8)))
        XCTAssertEqual(reopened.latestSequence, 0, "empty: the follower copies the leader's index again")
    }

    // MARK: The leader's waiting

    private final class SetRecorder: @unchecked Sendable {
        let sets = Mutex<[[String]]>([])
        let failing = Atomic(false)
        func record(_ set: [String]) throws {
            if failing.load(ordering: .relaxed) { throw HTTPError(503, "etcd unreachable") }
            sets.withLock { $0.append(set) }
        }
    }

    private func leader(syncTimeout: Double = 0.3) throws -> (RocksDB, LogShipping, SetRecorder) {
        let db = try RocksDB(path: directory + "/leader")
        let recorder = SetRecorder()
        let shipping = LogShipping(db: db, syncTimeout: syncTimeout, recordSet: { try recorder.record($0) })
        return (db, shipping, recorder)
    }

    func testAWriteWaitsForAnInSyncStandbyAndAPollConfirmsIt() throws {
        let (db, shipping, recorder) = try leader(syncTimeout: 5)
        try db.put(Array("a".utf8), Array("1".utf8), sync: true)
        // A caught-up standby's poll: it is waited for, and recorded once it holds the log's end.
        _ = try shipping.poll(member: "http://s:1", from: db.latestSequence + 1)
        XCTAssertEqual(recorder.sets.withLock { $0 }, [["http://s:1"]])

        try db.put(Array("b".utf8), Array("2".utf8), sync: true)
        let written = db.latestSequence
        let settled = Atomic(false)
        let writer = Thread {
            try? shipping.settle(through: written)
            settled.store(true, ordering: .relaxed)
        }
        writer.start()
        usleep(200_000)
        XCTAssertFalse(settled.load(ordering: .relaxed), "acknowledged before the standby held it")
        let batches = try shipping.poll(member: "http://s:1", from: written).batches
        XCTAssertEqual(batches.map(\.sequence), [written])
        XCTAssertFalse(settled.load(ordering: .relaxed), "a poll that fetches a write does not confirm it")
        _ = try shipping.poll(member: "http://s:1", from: written + 1)
        let deadline = Date().addingTimeInterval(2)
        while !settled.load(ordering: .relaxed), Date() < deadline { usleep(10_000) }
        XCTAssertTrue(settled.load(ordering: .relaxed), "the write settles once the standby confirmed it")
        XCTAssertEqual(shipping.view.first?.inSync, true)
    }

    func testASilentStandbyLeavesTheSetOnRecordAndTheWriteGoesOn() throws {
        let (db, shipping, recorder) = try leader(syncTimeout: 0.3)
        try db.put(Array("a".utf8), Array("1".utf8), sync: true)
        _ = try shipping.poll(member: "http://s:1", from: db.latestSequence + 1)
        try db.put(Array("b".utf8), Array("2".utf8), sync: true)
        let started = Date()
        try shipping.settle(through: db.latestSequence)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(started), 0.3, "the standby is given the sync timeout")
        XCTAssertEqual(recorder.sets.withLock { $0 }, [["http://s:1"], []], "the set without it is recorded before the write counts")
        XCTAssertEqual(shipping.view.first?.inSync, false)
        // Not waited for any more: the next write does not wait.
        try db.put(Array("c".utf8), Array("3".utf8), sync: true)
        let next = Date()
        try shipping.settle(through: db.latestSequence)
        XCTAssertLessThan(Date().timeIntervalSince(next), 0.2)
    }

    func testALeaderThatCannotRecordTheSetAcknowledgesNothing() throws {
        let (db, shipping, recorder) = try leader(syncTimeout: 0.2)
        try db.put(Array("a".utf8), Array("1".utf8), sync: true)
        _ = try shipping.poll(member: "http://s:1", from: db.latestSequence + 1)
        recorder.failing.store(true, ordering: .relaxed)
        try db.put(Array("b".utf8), Array("2".utf8), sync: true)
        XCTAssertThrowsError(try shipping.settle(through: db.latestSequence)) { error in
            XCTAssertEqual((error as? HTTPError)?.status, 503)
        }
        // Still waited for: a standby that comes back confirms and the write counts.
        _ = try shipping.poll(member: "http://s:1", from: db.latestSequence + 1)
        try shipping.settle(through: db.latestSequence)
    }

    func testAStandbyFarBehindIsNotWaitedForUntilItCatchesUp() throws {
        let (db, shipping, recorder) = try leader(syncTimeout: 5)
        for n in 0..<(Int(LogShipping.joinSlack) + 50) { try db.put(Array("k\(n)".utf8), [1], sync: false) }
        let batches = try shipping.poll(member: "http://s:1", from: 1).batches
        XCTAssertFalse(batches.isEmpty)
        XCTAssertEqual(recorder.sets.withLock { $0 }, [], "far behind: not recorded")
        let started = Date()
        try db.put(Array("x".utf8), [1], sync: true)
        try shipping.settle(through: db.latestSequence)
        XCTAssertLessThan(Date().timeIntervalSince(started), 1, "a write does not wait for a standby still catching up")
    }
}
