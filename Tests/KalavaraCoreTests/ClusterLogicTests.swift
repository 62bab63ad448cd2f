@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import Synchronization
import XCTest

final class ClusterLogicTests: XCTestCase {
    let volumes = (0..<5).map { "http://10.0.0.\($0):7000" }

    func testPlacementIsDeterministicAndIndependentOfListOrder() throws {
        let key = try Key("some/key")
        let order = Placement.order(volumes, for: key)
        XCTAssertEqual(Set(order), Set(volumes))
        XCTAssertEqual(Placement.order(volumes.reversed(), for: key), order)
        XCTAssertEqual(Placement.order(volumes, for: key), order)
    }

    func testPlacementSpreadsKeysEvenly() throws {
        var counts: [String: Int] = [:]
        for index in 0..<10_000 { counts[Placement.order(volumes, for: try Key("k\(index)"))[0], default: 0] += 1 }
        for volume in volumes { XCTAssertEqual(Double(counts[volume] ?? 0), 2000, accuracy: 250, volume) }
    }

    func testAddingAVolumeMovesOnlyKeysItWins() throws {
        let grown = volumes + ["http://10.0.0.9:7000"]
        var moved = 0
        for index in 0..<5000 {
            let key = try Key("k\(index)")
            let before = Placement.order(volumes, for: key)[0], after = Placement.order(grown, for: key)[0]
            if before != after {
                moved += 1
                XCTAssertEqual(after, "http://10.0.0.9:7000")
            }
        }
        XCTAssertEqual(Double(moved), 5000.0 / 6, accuracy: 200)
    }

    func testVersionClockIsMonotonicAndSurvivesRestart() throws {
        let ceiling = Mutex<UInt64>(0)
        var stored: UInt64 { ceiling.withLock { $0 } }
        let clock = try VersionClock(storedCeiling: 0) { value in ceiling.withLock { $0 = value } }
        var last: UInt64 = 0
        for _ in 0..<10_000 {
            let version = try clock.next()
            XCTAssertGreaterThan(version, last)
            last = version
        }
        XCTAssertGreaterThan(stored, last)
        XCTAssertEqual(VersionClock.issueTime(of: last), Date().timeIntervalSince1970, accuracy: 5)
        // A restart (even with the wall clock far behind) continues above every issued version.
        let restarted = try VersionClock(storedCeiling: stored) { value in ceiling.withLock { $0 = value } }
        XCTAssertGreaterThan(try restarted.next(), last)
    }

    /// Issue 21 #13: a ticket's age and a tombstone's are measured against the clock's
    /// present, so a wall clock that jumps forward (tombstones expire) and back (an old
    /// ticket looks young again) cannot let a ticket older than a dropped tombstone commit.
    func testTicketAgeIsMeasuredAgainstAPresentThatNeverRunsBackwards() throws {
        let second: UInt64 = 1000 << 16
        let start = VersionClock.wallNow()
        let wall = Mutex(start)
        let ceiling = Mutex<UInt64>(0)
        let clock = try VersionClock(storedCeiling: 0, wallClock: { wall.withLock { $0 } }) { value in
            ceiling.withLock { $0 = value }
        }
        let lifetime = 60.0
        let ticket = try clock.next()
        let tombstone = try clock.next()
        XCTAssertFalse(clock.hasExpired(ticket, lifetime: lifetime))
        // The wall clock jumps a day ahead; expiry settles the present there and drops the tombstone.
        wall.withLock { $0 = start + 86_400 * second }
        let present = try clock.settlePresent()
        XCTAssertGreaterThan(VersionClock.cutoff(at: present, lifetime: lifetime), tombstone)
        XCTAssertGreaterThan(ceiling.withLock { $0 }, present, "the settled present is persisted")
        // It jumps back to just after the ticket was issued: the ticket is still expired.
        wall.withLock { $0 = start + second }
        XCTAssertEqual(clock.present, present)
        XCTAssertTrue(clock.hasExpired(ticket, lifetime: lifetime))
        XCTAssertTrue(clock.hasExpired(tombstone, lifetime: lifetime))
        // New versions are issued above the present, and their tickets are young.
        let fresh = try clock.next()
        XCTAssertGreaterThan(fresh, present)
        XCTAssertFalse(clock.hasExpired(fresh, lifetime: lifetime))
        // After a restart, the present is at least the stored ceiling.
        let restarted = try VersionClock(storedCeiling: ceiling.withLock { $0 }, wallClock: { wall.withLock { $0 } }) { _ in }
        XCTAssertTrue(restarted.hasExpired(ticket, lifetime: lifetime))
    }

    func testIndexRecordEncoding() {
        let record = IndexRecord(version: 1 << 60, isTombstone: true, size: 12345, holders: [0, 7, 65535])
        XCTAssertEqual(IndexRecord(decoding: record.encoded()), record)
        let fenced = IndexRecord(version: 5, size: 1, holders: [2], floor: 9)
        XCTAssertEqual(IndexRecord(decoding: fenced.encoded()), fenced)
        XCTAssertTrue(fenced.rulesOut(4))
        XCTAssertTrue(fenced.rulesOut(9))
        XCTAssertFalse(fenced.rulesOut(10))
        XCTAssertEqual(IndexRecord(version: 1, size: 0, holders: [3]).encoded().count, 21)
        XCTAssertNil(IndexRecord(decoding: []))
        XCTAssertNil(IndexRecord(decoding: Array(record.encoded().dropLast())))
    }
}
