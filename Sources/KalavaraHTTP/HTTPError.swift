/// An error that becomes an HTTP answer: a status code and a one-line reason.
///
/// Everything below the routes throws these (parser, body reader, storage), and the
/// connection turns them into a response in one place (`HTTPResponse.error`).
public struct HTTPError: Error, CustomStringConvertible, Equatable, Sendable {
    public let status: Int
    public let message: String
    /// True when the connection cannot be trusted for another request afterwards
    /// (framing errors, timeouts): the answer carries `Connection: close`.
    let closesConnection: Bool
    /// Headers the answer must carry (`Allow` on a 405, `Retry-After` on a 503).
    public var headers: [String: String] = [:]

    public init(_ status: Int, _ message: String, closesConnection: Bool = false) {
        self.status = status
        self.message = message
        self.closesConnection = closesConnection
    }

    /// 405, with the `Allow` header RFC 9110 §15.5.6 requires.
    static func methodNotAllowed(_ allowed: [String]) -> HTTPError {
        var error = HTTPError(405, "method not allowed")
        error.headers["Allow"] = allowed.joined(separator: ", ")
        return error
    }

    public var description: String { "\(status) \(message)" }

    static func malformed(_ message: String) -> HTTPError {
        HTTPError(400, message, closesConnection: true)
    }
}

/// The peer went away or the socket failed: there is nobody left to answer.
public enum ConnectionError: Error, Equatable, Sendable {
    case closedByPeer
    case timedOut
    case failed(errno: Int32)
    /// A TLS handshake failed: the server's certificate did not verify, or it spoke no TLS.
    case tls(String)
}
