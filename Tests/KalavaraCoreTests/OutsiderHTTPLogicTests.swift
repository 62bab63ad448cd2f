import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import Logging
import Synchronization
import XCTest

/// The pure parts of issue 21's HTTP items: log escaping, the failed-login limiter, the
/// eviction order of connection states.
final class OutsiderHTTPLogicTests: XCTestCase {
    func testLogLinesEscapeControlCharactersOfClientText() {
        let line = CompactLogHandler.format(time: Date(timeIntervalSince1970: 0), label: "master", level: .info,
                                            message: "PUT a\nb\r\t\u{1B}[2J\\ é", metadata: ["user": "eve\n2026 master error: x"])
        XCTAssertEqual(line, "1970-01-01T00:00:00.000Z master info: PUT a\\nb\\r\\t\\x1B[2J\\\\ é user=eve\\n2026 master error: x\n")
        XCTAssertEqual(CompactLogHandler.escaped("a\u{85}b\u{2028}"), "a\\u{85}b\\u{2028}")
        XCTAssertEqual(line.filter { $0 == "\n" }.count, 1, "one event, one line")
    }

    func testFailedLoginsAreLimitedPerAddressAndForgiven() {
        let clock = Mutex(0.0)
        let limiter = AuthFailureLimiter(burst: 3, refillPerSecond: 0.5, capacity: 4, now: { clock.withLock { $0 } })
        for _ in 0..<3 { XCTAssertNil(limiter.retryAfter("10.0.0.1")); limiter.failed("10.0.0.1") }
        XCTAssertEqual(limiter.retryAfter("10.0.0.1"), 2, "one more try after 2 s")
        XCTAssertNil(limiter.retryAfter("10.0.0.2"), "other addresses are unaffected")
        clock.withLock { $0 = 2 }
        XCTAssertNil(limiter.retryAfter("10.0.0.1"))
        // The table stays bounded: refilled addresses go first, then the least suspicious.
        for index in 2...9 { limiter.failed("10.0.0.\(index)") }
        XCTAssertLessThanOrEqual(limiter.count, 4)
    }

    func testBareLineBreaksDoNotRefreshAnIdleConnection() {
        var state = ConnectionState(.idle(since: 5))
        XCTAssertEqual(state.nothingPending(now: 50), .wait)
        XCTAssertEqual(state.idleSince, 5, "line breaks between requests are not activity")
        XCTAssertEqual(state.bytesPending(now: 50), .scan(from: 0))
        XCTAssertEqual(state.headComplete(claimed: true), .serve(firstHead: false))
        XCTAssertEqual(state.handOff(.pendingOutput([], closeAfter: false)), .handOff)
        XCTAssertNil(state.idleSince, "a connection a worker serves is never evicted")
        state.watched(now: 60)
        XCTAssertEqual(state.idleSince, 60)
    }
}

/// The reviewer's findings on issue 21's HTTP work: what an outsider controls in the access
/// log, the eviction handshake, the failed-login table.
final class HTTPReviewLogicTests: XCTestCase {
    func testAQuoteInAQuotedLogValueCannotForgeFields() {
        let line = CompactLogHandler.format(time: Date(timeIntervalSince1970: 0), label: "master", level: .info,
                                            message: "access GET /x 404",
                                            metadata: ["reason": "\"no \\ such\" user=root x=\"", "user": "bob"])
        // The reason was `no \ such" user=root x=`: only the quotes that delimit it are bare.
        XCTAssertEqual(line, "1970-01-01T00:00:00.000Z master info: access GET /x 404 reason=\"no \\\\ such\\\" user=root x=\" user=bob\n")
    }

    func testAccessLogCutsClientTextAndBudgetsFailureLines() {
        XCTAssertEqual(AccessLog.clipped("/short"), "/short")
        let long = String(repeating: "\u{1}", count: 60_000)
        XCTAssertEqual(AccessLog.clipped(long), String(repeating: "\u{1}", count: AccessLog.maxClientText) + "…(60000 bytes)")

        let log = AccessLog(mode: .errors, failureLinesPerSecond: 3)
        log.rollWindow(now: monotonicSeconds())
        XCTAssertFalse(log.logs(status: 200), "errors mode: no line for a success")
        let logged = (0..<10).filter { _ in log.logs(status: 404) }.count
        // The window may roll over once mid-loop: at most two seconds' budget.
        XCTAssertGreaterThanOrEqual(logged, 3)
        XCTAssertLessThanOrEqual(logged, 6, "past the budget a 404 gets no line")
        log.rollWindow(now: monotonicSeconds() + 5)
        XCTAssertTrue(log.logs(status: 404), "a new second, a new budget")
        XCTAssertTrue(AccessLog(mode: .all).logs(status: 200))
    }

    func testEvictionAndARequestNeverBothTakeAConnection() {
        let mark = IdleMark(idleSince: 5)
        XCTAssertEqual(mark.idleSince, 5)
        // The owner took it for a request after the evictor saw it idle: the eviction fails.
        XCTAssertTrue(mark.publish(idleSince: nil))
        XCTAssertNil(mark.idleSince, "busy: not a candidate")
        XCTAssertFalse(mark.evict(ifIdleSince: 5))
        XCTAssertFalse(mark.isEvicted)
        // Idle again, evicted first: the owner finds it evicted and serves nothing.
        XCTAssertTrue(mark.publish(idleSince: 7))
        XCTAssertFalse(mark.evict(ifIdleSince: 5), "a stale sighting wins nothing")
        XCTAssertTrue(mark.evict(ifIdleSince: 7))
        XCTAssertTrue(mark.isEvicted)
        XCTAssertFalse(mark.publish(idleSince: nil), "the owner loses the request to the eviction")
        XCTAssertFalse(mark.publish(idleSince: 9))
        XCTAssertTrue(mark.isEvicted, "nothing unmarks an eviction")
        XCTAssertNil(mark.idleSince)

        var state = ConnectionState(.readingHead(startedAt: 3, scanned: 0))
        XCTAssertEqual(state.idleSince, 3, "a trickling head stays evictable")
        _ = state.headComplete(claimed: true)
        XCTAssertNil(state.idleSince, "a head being answered is not")
    }

    func testFailedLoginTableIsCheapWhenEmptyAndBoundedWhenFull() {
        let clock = Mutex(0.0)
        let limiter = AuthFailureLimiter(burst: 2, refillPerSecond: 1, capacity: 16, now: { clock.withLock { $0 } })
        XCTAssertNil(limiter.retryAfter("10.0.0.1"))
        XCTAssertEqual(limiter.count, 0)
        for index in 0..<1000 { limiter.failed("10.1.\(index / 256).\(index % 256)") }
        XCTAssertEqual(limiter.count, 16, "a full table evicts one address per new one")
        // A guesser still being limited is not the first to go.
        for _ in 0..<2 { limiter.failed("10.9.9.9") }
        XCTAssertNotNil(limiter.retryAfter("10.9.9.9"))
        // A refilled address is forgotten when next seen.
        clock.withLock { $0 = 100 }
        XCTAssertNil(limiter.retryAfter("10.9.9.9"))
        XCTAssertEqual(limiter.count, 15)

        XCTAssertEqual(AuthFailureLimiter.key("2001:db8:1:2:aaaa::1"), AuthFailureLimiter.key("2001:db8:1:2:bbbb::9"),
                       "one IPv6 /64 is one address")
        XCTAssertNotEqual(AuthFailureLimiter.key("2001:db8:1:2::1"), AuthFailureLimiter.key("2001:db8:1:3::1"))
        XCTAssertEqual(AuthFailureLimiter.key("192.0.2.7"), "192.0.2.7")
    }
}
