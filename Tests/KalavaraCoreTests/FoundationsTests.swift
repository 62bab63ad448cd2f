import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import Logging
import XCTest

/// The pieces issue 9 brought in: digests from libcrypto and zlib, the log line format,
/// request ids, the route table, and the connection state machine on a driven clock.
final class FoundationsTests: XCTestCase {
    func testDigestsMatchPublishedVectors() {
        XCTAssertEqual(Hex.encode(MD5.digest(Array("abc".utf8))), "900150983cd24fb0d6963f7d28e17f72")
        XCTAssertEqual(Hex.encode(MD5.digest([])), "d41d8cd98f00b204e9800998ecf8427e")
        // RFC 4231, test case 2.
        XCTAssertEqual(Hex.encode(HMACSHA256.authenticationCode(key: Array("Jefe".utf8),
                                                                message: Array("what do ya want for nothing?".utf8))),
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        // A running hash over pieces is the one-shot hash of the whole.
        let whole = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let running = SHA256.hasher()
        for start in stride(from: 0, to: whole.count, by: 7777) { running.update(Array(whole[start..<min(whole.count, start + 7777)])) }
        XCTAssertEqual(running.finish(), SHA256.digest(whole))
        var crc = CRC32()
        whole.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[0..<500])); crc.update(UnsafeRawBufferPointer(rebasing: $0[500...])) }
        XCTAssertEqual(crc.value, CRC32.checksum(whole))
        XCTAssertTrue(HMACSHA256.equal([1, 2, 3], [1, 2, 3]))
        XCTAssertFalse(HMACSHA256.equal([1, 2, 3], [1, 2, 4]))
        XCTAssertFalse(HMACSHA256.equal([1, 2, 3], [1, 2]))
        XCTAssertEqual(Hex.decode("00ff10"), [0, 255, 16])
        XCTAssertNil(Hex.decode("0g"))
    }

    func testLogLineKeepsTheCompactFormat() {
        let time = Date(timeIntervalSince1970: 1_764_625_744.123)
        let line = CompactLogHandler.format(time: time, label: "volume", level: .warning, message: "commit failed",
                                            metadata: ["rid": "abc", "key": "a/b"])
        XCTAssertEqual(line, "2025-12-01T21:49:04.123Z volume warning: commit failed key=a/b rid=abc\n")
        XCTAssertEqual(CompactLogHandler.format(time: time, label: "master", level: .info, message: "ok", metadata: [:]),
                       "2025-12-01T21:49:04.123Z master info: ok\n")
    }

    func testRequestIDs() {
        XCTAssertTrue(RequestID.isValid(RequestID.make()))
        XCTAssertEqual(RequestID.make().count, 16)
        XCTAssertNotEqual(RequestID.make(), RequestID.make())
        XCTAssertEqual(RequestID.from(HTTPHeaders([("X-Request-Id", "client-42")])), "client-42")
        for bad in ["", "a b", String(repeating: "x", count: 65), "quote\"", "new\nline"] {
            XCTAssertFalse(RequestID.isValid(bad), bad)
            XCTAssertNotEqual(RequestID.from(HTTPHeaders([("X-Request-Id", bad)])), bad)
        }
        // It travels in the ticket and is checked there.
        let ticket = PlacementTicket(version: 7, master: "http://m:1", holders: ["http://v:1"], requestID: "r-1")
        XCTAssertEqual(try PlacementTicket(QueryParameters(Substring(ticket.query))), ticket)
        XCTAssertThrowsError(try PlacementTicket(QueryParameters("t=1&ver=7&rid=a%20b")))
    }

    func testVersionClockRaisesItsCeilingAhead() throws {
        let writes = ThreadSafeCount()
        let clock = try VersionClock(storedCeiling: 0) { _ in writes.add() }
        for _ in 0..<100_000 { _ = try clock.next() }
        // One write at the start, then only as time passes: never one per version.
        XCTAssertLessThan(writes.value, 10)
    }
}

/// A counter for closures that must be Sendable.
final class ThreadSafeCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
