import Glibc
import KalavaraSupport

/// A daemon's routes, declared once: which handler answers which path and methods, its
/// name in metrics, and whether it is answered on the event loop.
///
/// Why "on the loop" is a property of the route: a route that only reads memory or the
/// page cache (a redirect from the index, a small value, a health check) is cheaper to
/// answer in the thread that noticed the request than to hand to a worker; a route that
/// may block (a body, an fsync, a call to another daemon) must never run there. Declaring
/// it with the route keeps one table, where before there were two that had to agree.
public final class Route: Sendable {
    /// How a route's path is matched.
    public enum Path: Sendable {
        case exact(String)
        /// The path starts with this; the handler reads the rest (a key).
        case prefix(String)
    }

    /// Where the route runs.
    public enum Execution: Sendable {
        /// On the event loop when the request has no body; the handler must not block.
        case eventLoop
        /// On a worker thread, where it may block.
        case worker
    }

    public typealias Handler = @Sendable (HTTPRequest, MessageBody) throws -> HTTPResponse

    /// The `route` label of this route's metrics.
    public let name: String
    public let path: Path
    public let methods: [String]
    public let execution: Execution
    public let handler: Handler
    /// The path's bytes, for matching without String's Unicode machinery.
    private let pattern: [UInt8]
    private let isPrefix: Bool

    public init(_ name: String, _ path: Path, methods: [String], on execution: Execution = .worker,
                _ handler: @escaping Handler) {
        self.name = name
        self.path = path
        self.methods = methods
        self.execution = execution
        self.handler = handler
        switch path {
        case .exact(let text): pattern = Array(text.utf8); isPrefix = false
        case .prefix(let text): pattern = Array(text.utf8); isPrefix = true
        }
    }

    /// Byte comparisons: paths are still percent-encoded ASCII, and `String`'s Unicode-aware
    /// comparisons cost more than the rest of routing on every request.
    func matches(_ requestPath: UnsafeBufferPointer<UInt8>) -> Bool {
        guard isPrefix ? requestPath.count >= pattern.count : requestPath.count == pattern.count else { return false }
        guard let path = requestPath.baseAddress else { return pattern.isEmpty }
        return pattern.withUnsafeBufferPointer { memcmp($0.baseAddress!, path, $0.count) == 0 }
    }
}

/// The routes of one daemon, and how a request finds its route.
public struct Router: Sendable {
    let routes: [Route]

    /// What a request resolves to.
    enum Resolution {
        case route(index: Int, Route)
        /// No route has this path: `404`.
        case notFound
        /// Routes have this path, but not this method: `405` with these in `Allow`.
        case methodNotAllowed([String])
    }

    /// Exact paths are tried before prefixes; otherwise routes are tried in order.
    public init(_ routes: [Route]) {
        let exact = routes.filter { if case .exact = $0.path { return true } else { return false } }
        self.routes = exact + routes.filter { if case .prefix = $0.path { return true } else { return false } }
    }

    func resolve(_ request: HTTPRequest) -> Resolution {
        if let resolution = request.path.utf8.withContiguousStorageIfAvailable({ resolve(request.method, $0) }) {
            return resolution
        }
        return Array(request.path.utf8).withUnsafeBufferPointer { resolve(request.method, $0) }
    }

    private func resolve(_ method: String, _ path: UnsafeBufferPointer<UInt8>) -> Resolution {
        var allowed: [String] = []
        for index in routes.indices {
            let route = routes[index]
            guard route.matches(path) else { continue }
            if route.methods.contains(method) { return .route(index: index, route) }
            for method in route.methods where !allowed.contains(method) { allowed.append(method) }
        }
        return allowed.isEmpty ? .notFound : .methodNotAllowed(allowed)
    }

    /// Route names for metrics, in index order, then the label of requests that matched none.
    var metricNames: [String] { routes.map(\.name) + [Self.unmatched] }
    static let unmatched = "unmatched"
}
