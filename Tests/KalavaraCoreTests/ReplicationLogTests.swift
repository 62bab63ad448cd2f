import Foundation
@testable import KalavaraCore
import Synchronization
import XCTest

/// RocksDB's log as a replication stream: a follower fed from a leader's `LogTail` holds
/// the same contents at the same sequence numbers.
final class ReplicationLogTests: XCTestCase {
    /// A directory of its own for each test (XCTest makes an instance per test), removed after it.
    private let directory = NSTemporaryDirectory() + "kalavara-replication-" + UUID().uuidString

    override func setUpWithError() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    private func contents(_ db: RocksDB) throws -> [[UInt8]: [UInt8]] {
        var result: [[UInt8]: [UInt8]] = [:]
        for entry in try db.scan(prefix: [], after: nil, limit: .max) { result[entry.key] = entry.value }
        return result
    }

    /// Writes `count` batches of one put each ("k<first + i>" = "v<i>"), each a batch of its own.
    private func writeBatches(_ db: RocksDB, _ count: Int, first: Int = 0) throws {
        for index in first..<first + count { try db.put(Array("k\(index)".utf8), Array("v\(index)".utf8), sync: false) }
    }

    /// Reads everything available in chunks of `maxBytes`, checking each batch follows the last.
    private func drain(_ tail: LogTail, maxBytes: Int = 200) throws -> [ReplicatedBatch] {
        var all: [ReplicatedBatch] = []
        while true {
            let start = tail.position
            let batches = try tail.read(maxBytes: maxBytes)
            guard !batches.isEmpty else { return all }
            XCTAssertEqual(batches.first?.sequence, start)
            for (previous, batch) in zip(batches, batches.dropFirst()) { XCTAssertEqual(batch.sequence, previous.next) }
            XCTAssertEqual(tail.position, batches.last!.next)
            all += batches
        }
    }

    func testFollowerFromCheckpointTracksLeaderUnderConcurrentWriters() throws {
        // The log kept, so that a file left while the tail is still in the one before is there to read.
        let leader = try RocksDB(path: directory + "/leader", keepLog: (seconds: 3600, megabytes: 0))
        try writeBatches(leader, 500)
        let start = try leader.checkpoint(into: directory + "/follower")
        let follower = try RocksDB(path: directory + "/follower")
        XCTAssertEqual(follower.latestSequence, start)
        let tail = try leader.logTail(from: start + 1)

        let writers = DispatchGroup()
        for writer in 0..<4 {
            DispatchQueue.global().async(group: writers) {
                for index in 0..<5000 {
                    var batch = WriteBatch()
                    let key = Array("w\(writer)-\(index % 700)".utf8)
                    if index % 7 == 3 { batch.delete(key) } else { batch.put(key, Array("\(index)".utf8)) }
                    if index % 3 == 0 { batch.put(Array("k\(index % 500)".utf8), Array("w\(writer)".utf8)) }
                    try! leader.write(batch, sync: index % 10 == 0)
                    if writer == 0, index % 2000 == 1000 { try! leader.flush() } // the log moves to a new file
                }
            }
        }
        var read = 0, reads = 0
        var expected = start + 1
        var writing = true
        while writing || tail.position <= leader.latestSequence {
            writing = writers.wait(timeout: .now()) == .timedOut
            let batches = try tail.read(maxBytes: 16 << 10)
            reads += 1
            for batch in batches {
                XCTAssertEqual(batch.sequence, expected, "a batch read twice or skipped")
                expected = batch.next
            }
            read += batches.count
            try follower.apply(batches, sync: false)
            if batches.isEmpty { usleep(200) }
        }
        XCTAssertGreaterThanOrEqual(read, 1) // group commit may merge the 20,000 writes into fewer batches
        XCTAssertEqual(follower.latestSequence, leader.latestSequence)
        XCTAssertEqual(expected, leader.latestSequence + 1)
        XCTAssertEqual(try contents(follower), try contents(leader))
        print("replication: \(read) batches for 20000 writes in \(reads) reads")
    }

    func testTailFollowsAcrossLogSwitches() throws {
        let db = try RocksDB(path: directory + "/db", keepLog: (seconds: 3600, megabytes: 64))
        try writeBatches(db, 100)
        let tail = try db.logTail(from: 1)
        var batches = try tail.read(maxBytes: 300) // part of the first log file only
        XCTAssertLessThan(batches.count, 100)
        for round in 1...3 {
            try db.flush() // the log moves to a new file
            try writeBatches(db, 100, first: round * 100)
            batches += try drain(tail)
        }
        try db.flush()
        XCTAssertEqual(try drain(tail), [])
        try writeBatches(db, 10, first: 400)
        batches += try drain(tail)
        XCTAssertEqual(batches.map(\.sequence), Array(1...410))
        XCTAssertEqual(tail.position, db.latestSequence + 1)
    }

    func testTailSurvivesReopenAndFailsAfterClose() throws {
        let db = try RocksDB(path: directory + "/db")
        try writeBatches(db, 20)
        let tail = try db.logTail(from: 1)
        XCTAssertEqual(try drain(tail).count, 20)
        db.holdOffWrites("test")
        try db.reopen() // destroys the tail's iterator with the database it pointed into
        try writeBatches(db, 5, first: 20)
        XCTAssertEqual(try drain(tail).map(\.sequence), Array(21...25))
        db.close()
        XCTAssertThrowsError(try tail.read(maxBytes: 100))
    }

    func testPurgedSequenceIsAGapUnlessTheLogIsKept() throws {
        for keep in [false, true] {
            let db = try RocksDB(path: directory + "/db-\(keep)", keepLog: keep ? (seconds: 3600, megabytes: 0) : nil)
            for round in 0..<3 {
                try writeBatches(db, 50, first: round * 50)
                try db.flush()
            }
            if keep {
                XCTAssertEqual(try drain(try db.logTail(from: 1)).map(\.sequence), Array(1...150))
                XCTAssertEqual(try drain(try db.logTail(from: 101)).map(\.sequence), Array(101...150))
            } else {
                // Obsolete log files are deleted in the background just after a flush.
                var gap: Error?
                for _ in 0..<100 where gap == nil {
                    do { _ = try drain(try db.logTail(from: 1)); usleep(20_000) } catch { gap = error }
                }
                XCTAssert(gap is RocksDB.LogGap, "\(String(describing: gap))")
            }
            XCTAssertThrowsError(try db.logTail(from: 152)) { XCTAssert($0 is RocksDB.LogGap) } // ahead of the log
            XCTAssertEqual(try db.logTail(from: 151).read(maxBytes: 100), [])
        }
    }

    func testApplyRefusesGapsAndOverlapsWritingNothing() throws {
        let leader = try RocksDB(path: directory + "/leader")
        let follower = try RocksDB(path: directory + "/follower")
        try writeBatches(leader, 3)
        try leader.delete(Array("k1".utf8), sync: true)
        let batches = try drain(try leader.logTail(from: 1))
        XCTAssertEqual(batches.map(\.sequence), [1, 2, 3, 4])

        for wrong in [[batches[0], batches[2]], [batches[1]], [batches[1], batches[2]]] {
            XCTAssertThrowsError(try follower.apply(wrong, sync: true)) { XCTAssert($0 is RocksDB.LogGap) }
            XCTAssertEqual(follower.latestSequence, 0)
            XCTAssertEqual(try contents(follower), [:])
        }
        try follower.apply(Array(batches[0...1]), sync: true)
        XCTAssertEqual(follower.latestSequence, 2)
        XCTAssertThrowsError(try follower.apply([batches[1], batches[2]], sync: false)) { XCTAssert($0 is RocksDB.LogGap) }
        XCTAssertEqual(follower.latestSequence, 2)
        try follower.apply(Array(batches[2...]), sync: true)
        XCTAssertEqual(follower.latestSequence, 4)
        XCTAssertEqual(try contents(follower), try contents(leader))
        XCTAssertEqual(try contents(follower).count, 2)
    }

    func testWireFormatRoundTripsAndRefusesEverythingElse() throws {
        let db = try RocksDB(path: directory + "/db")
        var batch = WriteBatch()
        batch.put(Array(repeating: 7, count: 200), Array(repeating: 9, count: 300)) // lengths of two varint bytes
        batch.delete(Array("gone".utf8))
        batch.put([], [])
        try db.write(batch, sync: false)
        try writeBatches(db, 3)
        let batches = try drain(try db.logTail(from: 1))
        XCTAssertEqual(batches.map(\.count), [3, 1, 1, 1])
        let encoded = ReplicatedBatch.encode(batches)
        XCTAssertEqual(try ReplicatedBatch.decode(encoded), batches)
        XCTAssertEqual(try ReplicatedBatch.decode(ReplicatedBatch.encode([])), [])
        for length in 0..<encoded.count {
            XCTAssertThrowsError(try ReplicatedBatch.decode(Array(encoded[..<length])), "truncated to \(length)")
        }
        XCTAssertThrowsError(try ReplicatedBatch.decode(encoded + [0]))
        // A record of a type RocksDB.write never makes (a merge) is refused.
        var merge = batches[1].data
        merge[ReplicatedBatch.headerSize] = 0x2
        XCTAssertThrowsError(try ReplicatedBatch(data: merge))

        var generator = SystemRandomNumberGenerator()
        var accepted = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0..<64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            } else { // a valid encoding with a few bytes changed
                bytes = encoded
                for _ in 0..<Int.random(in: 1...3, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            }
            // Whatever is accepted is exactly what encode writes for it.
            if let decoded = try? ReplicatedBatch.decode(bytes) {
                XCTAssertEqual(ReplicatedBatch.encode(decoded), bytes)
                accepted += 1
            }
        }
        print("replication: \(accepted) of 20000 random or mangled encodings decoded (into what encodes back to them)")
    }

    func testCheckpointReportsTheSequenceItHolds() throws {
        let db = try RocksDB(path: directory + "/db")
        try writeBatches(db, 120)
        let sequence = try db.checkpoint(into: directory + "/copy")
        XCTAssertEqual(sequence, 120)
        try writeBatches(db, 5, first: 120)
        XCTAssertThrowsError(try db.checkpoint(into: directory + "/copy")) // exists already
        let copy = try RocksDB(path: directory + "/copy")
        XCTAssertEqual(copy.latestSequence, sequence)
        XCTAssertEqual(try copy.get(Array("k119".utf8)), Array("v119".utf8))
        XCTAssertNil(try copy.get(Array("k120".utf8)))
    }

    /// Measures what a read costs per batch with the iterator kept (caught up, one new
    /// batch per read) and with a tail made anew for each (re-seeking through the log file).
    func testReadCostCaughtUpAndRecreated() throws {
        let db = try RocksDB(path: directory + "/db")
        try writeBatches(db, 20_000)
        let tail = try db.logTail(from: db.latestSequence + 1)
        let clock = ContinuousClock()
        var kept = Duration.zero
        for index in 0..<2000 {
            try writeBatches(db, 1, first: 30_000 + index)
            kept += try clock.measure { XCTAssertEqual(try tail.read(maxBytes: 1 << 20).count, 1) }
        }
        var recreated = Duration.zero
        for index in 0..<200 {
            try writeBatches(db, 1, first: 40_000 + index)
            let position = db.latestSequence
            recreated += try clock.measure { XCTAssertEqual(try db.logTail(from: position).read(maxBytes: 1 << 20).count, 1) }
        }
        print("replication: a read of one batch takes \(kept / 2000) caught up, \(recreated / 200) with a new iterator (22,000 batches in the log file)")
    }
}
