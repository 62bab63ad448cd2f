import Foundation
@testable import KalavaraHTTP
import KalavaraSupport
import Synchronization
import XCTest

/// The router, the connection state machine and the server's timeouts, on their own: no
/// keys, no volumes.
final class ServerTests: XCTestCase {
    private func request(_ method: String, _ target: String) throws -> HTTPRequest {
        try HTTPRequest(method: method, target: target, minorVersion: 1, headers: HTTPHeaders([("Host", "x")]))
    }

    func testRouterResolvesExactBeforePrefixAndAnswersAllow() throws {
        let ok: Route.Handler = { _, _ in .text(200, "ok") }
        let router = Router([
            Route("read", .prefix("/store/"), methods: ["GET", "HEAD"], on: .eventLoop, ok),
            Route("write", .prefix("/store/"), methods: ["PUT", "DELETE"], ok),
            Route("list", .exact("/store/"), methods: ["GET"], ok),
            Route("health", .exact("/health"), methods: ["GET"], on: .eventLoop, ok),
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

    /// A loop route that finds it must block (a bad checksum on a volume's read, whose
    /// quarantine syncs) throws `MustHandOff`: the request goes to a worker, which runs the
    /// handler again with the route the loop resolved, and the client gets the worker's
    /// answer, never the loop's half. Nothing the handler does after the throw runs on the loop.
    func testMustHandOffRunsTheHandlerAgainOnAWorker() throws {
        let ranOn = Mutex<[Bool]>([])
        let server = HTTPServer(configuration: HTTPServer.Configuration(host: "127.0.0.1", port: 0), router: Router([
            Route("read", .prefix("/store/"), methods: ["GET"], on: .eventLoop) { request, _ in
                let onLoop = EventLoop.onLoopThread
                ranOn.withLock { $0.append(onLoop) }
                if onLoop { throw EventLoop.MustHandOff() }
                return .text(200, "from a worker: \(request.path)")
            },
        ]), metrics: Metrics())
        try server.start()
        defer { server.stop() }
        let url = HTTPURL("http://127.0.0.1:\(server.boundPort)/store/k")!
        let connection = try HTTPClient.connect(url, timeout: 5)
        for _ in 0..<2 { // and again on the same connection, back from the worker
            try connection.write(Array("GET /store/k HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            let response = try HTTPClient.readResponse(connection, method: "GET")
            XCTAssertEqual(response.status, 200)
        }
        XCTAssertEqual(ranOn.withLock { $0 }, [true, false, true, false])
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
            Route("health", .exact("/health"), methods: ["GET"], on: .eventLoop) { _, _ in .text(200, "ok") },
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
}
