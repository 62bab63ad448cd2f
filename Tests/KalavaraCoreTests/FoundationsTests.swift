import Foundation
import Logging
@testable import KalavaraCore
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

    private func request(_ method: String, _ target: String) throws -> HTTPRequest {
        try HTTPRequest(method: method, target: target, minorVersion: 1, headers: HTTPHeaders([("Host", "x")]))
    }

    func testRouterResolvesExactBeforePrefixAndAnswersAllow() throws {
        let ok: Route.Handler = { _, _ in .text(200, "ok") }
        let router = Router([
            Route("read", .prefix("/store/"), methods: ["GET", "HEAD"], on: .eventLoop, access: .open, ok),
            Route("write", .prefix("/store/"), methods: ["PUT", "DELETE"], access: .open, ok),
            Route("list", .exact("/store/"), methods: ["GET"], access: .open, ok),
            Route("health", .exact("/health"), methods: ["GET"], on: .eventLoop, access: .open, ok),
        ])
        func name(_ method: String, _ path: String) throws -> String {
            switch router.resolve(try request(method, path)) {
            case .route(_, let route): return route.name
            case .notFound: return "404"
            case .methodNotAllowed(let allowed): return "405 " + allowed.joined(separator: ", ")
            }
        }
        XCTAssertEqual(try name("GET", "/store/"), "list")
        XCTAssertEqual(try name("GET", "/store/k"), "read")
        XCTAssertEqual(try name("PUT", "/store/k"), "write")
        XCTAssertEqual(try name("PUT", "/store/"), "write")
        XCTAssertEqual(try name("POST", "/store/k"), "405 GET, HEAD, PUT, DELETE")
        XCTAssertEqual(try name("GET", "/nope"), "404")
        XCTAssertEqual(try name("GET", "/health/x"), "404")
        XCTAssertEqual(try name("DELETE", "/health"), "405 GET")
        XCTAssertEqual(router.metricNames, ["list", "health", "read", "write", "unmatched"])
    }

    func testConnectionStateTimeouts() {
        var state = ConnectionState.idle(since: 100)
        XCTAssertNil(state.timeoutAction(now: 129, readTimeout: 5, idleTimeout: 30))
        XCTAssertEqual(state.timeoutAction(now: 131, readTimeout: 5, idleTimeout: 30), .closeIdle)
        // A head begins: the read timeout runs from its first byte, however it trickles.
        let progress = state.headBytesArrived(now: 120)
        XCTAssertEqual(progress.startedAt, 120)
        state.headIncomplete(startedAt: progress.startedAt, scanned: 10)
        XCTAssertEqual(state.headBytesArrived(now: 124).startedAt, 120)
        XCTAssertNil(state.timeoutAction(now: 124, readTimeout: 5, idleTimeout: 30))
        XCTAssertEqual(state.timeoutAction(now: 125.5, readTimeout: 5, idleTimeout: 30), .headTimedOut)
        // A worker's connection is never timed out by the loop.
        state.handOff(.badHead(HTTPError(400, "x")))
        XCTAssertNil(state.timeoutAction(now: 10_000, readTimeout: 5, idleTimeout: 30))
        XCTAssertNotNil(state.work)
        state.becameIdle(now: 200)
        XCTAssertNil(state.work)
    }

    /// A real server on loopback whose clock the test moves: the idle timeout closes a
    /// connection when the clock passes it, and a trickled head gets its 408, with no
    /// waiting for 30 seconds of wall-clock time.
    func testServerTimeoutsFollowTheInjectedClock() throws {
        let clock = ManualClock()
        var configuration = HTTPServer.Configuration(host: "127.0.0.1", port: 0)
        configuration.clock = clock
        configuration.idleTimeout = 30
        configuration.readTimeout = 30
        let server = HTTPServer(configuration: configuration, router: Router([
            Route("health", .exact("/health"), methods: ["GET"], on: .eventLoop, access: .open) { _, _ in .text(200, "ok") },
        ]), metrics: Metrics())
        try server.start()
        defer { server.stop() }
        let url = HTTPURL("http://127.0.0.1:\(server.boundPort)/health")!

        let idle = try HTTPClient.connect(url, timeout: 5)
        try idle.write(Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        XCTAssertEqual(try HTTPClient.readResponse(idle, method: "GET").status, 200)
        let slow = try HTTPClient.connect(url, timeout: 5)
        try slow.write(Array("GET /health HTTP/1.1\r\nHost:".utf8))
        usleep(300_000)
        XCTAssertEqual(idle.fillWithoutBlocking(), .nothingYet, "closed before its time")
        XCTAssertEqual(slow.fillWithoutBlocking(), .nothingYet, "answered before its time")

        clock.advance(by: 31)
        let deadline = Date().addingTimeInterval(3)
        var idleClosed = false, slowAnswered = false
        while Date() < deadline, !(idleClosed && slowAnswered) {
            if !idleClosed, idle.fillWithoutBlocking() == .closed { idleClosed = true }
            if !slowAnswered, slow.fillWithoutBlocking() == .data { slowAnswered = true }
            usleep(20_000)
        }
        XCTAssertTrue(idleClosed, "idle connection still open after the clock passed the idle timeout")
        XCTAssertTrue(slowAnswered)
        XCTAssertTrue(String(decoding: Array(slow.buffered), as: UTF8.self).hasPrefix("HTTP/1.1 408"))
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
