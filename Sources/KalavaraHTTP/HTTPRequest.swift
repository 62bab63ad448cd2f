import KalavaraSupport
/// How the length of a message body is known (RFC 9112 §6).
public enum BodyFraming: Equatable, Sendable {
    case none
    case length(Int)
    case chunked
    /// Responses only: the body runs until the server closes the connection.
    case untilClose
}

/// A parsed request head. The body, if any, is read separately through `MessageBody`.
public struct HTTPRequest: Sendable {
    public let method: String
    /// The request target as sent (origin-form, or absolute-form reduced to its path).
    public let target: String
    /// The target's path, still percent-encoded.
    public let path: Substring
    /// The text after `?`, still percent-encoded, or nil.
    public let query: Substring?
    public let minorVersion: Int
    public let headers: HTTPHeaders
    /// Whether the client lets the connection carry another request after this one.
    let keepAlive: Bool
    public let framing: BodyFraming
    /// `Expect: 100-continue`: the client waits for `100 Continue` before sending the body.
    let expectsContinue: Bool
    /// The client's IP address as text (`127.0.0.1`, `::1`), `-` when unknown; set by the
    /// connection that read the request.
    public internal(set) var peer = "-"
    /// Where a handler notes the user it identified (for the access log); set by the
    /// connection that read the request, nil for a request made otherwise.
    public internal(set) var context: RequestContext?

    init(method: String, target: String, minorVersion: Int, headers: HTTPHeaders) throws {
        self.method = method
        self.minorVersion = minorVersion
        self.headers = headers

        // Absolute-form ("http://host/path") must be accepted by servers (RFC 9112 §3.2.2).
        var originForm = Substring(target)
        if target.hasPrefix("http://") || target.hasPrefix("https://") {
            let afterScheme = target[target.index(target.firstIndex(of: ":")!, offsetBy: 3)...]
            originForm = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
        } else if !(target.hasPrefix("/") || (target == "*" && method == "OPTIONS")) {
            throw HTTPError.malformed("request target must start with /")
        }
        self.target = String(originForm)
        // Searched as bytes: `firstIndex(of: "?")` walks Characters, 3,300 instructions a request.
        if let mark = self.target.utf8.firstIndex(of: ASCII.question) {
            path = self.target[..<mark]
            query = self.target[self.target.utf8.index(after: mark)...]
        } else {
            path = self.target[...]
            query = nil
        }

        let connection = headers.contains("Connection") ? headers.listValues("Connection") : []
        if connection.contains(where: { $0.caseInsensitiveEquals("close") }) {
            keepAlive = false
        } else if minorVersion == 0 {
            keepAlive = connection.contains(where: { $0.caseInsensitiveEquals("keep-alive") })
        } else {
            keepAlive = true
        }

        framing = try Self.requestFraming(headers, minorVersion: minorVersion)

        // 100-continue is the only expectation HTTP defines. Any other is ignored, as RFC
        // 9110 §10.1.1 allows (417 is a "MAY") and as S3 does: a client that sends one (some
        // S3 clients do) gets its request served instead of a 417 it cannot act on.
        // HTTP/1.0 clients do not know 100 (RFC 9110 §10.1.1): ignore it for them too.
        expectsContinue = minorVersion >= 1 && framing != .none && framing != .length(0) && headers.contains("Expect")
            && headers.listValues("Expect").contains { $0.caseInsensitiveEquals("100-continue") }

        // RFC 9112 §3.2: an HTTP/1.1 request with no Host field, or more than one, is a 400.
        if minorVersion >= 1 {
            var hosts = 0
            for field in headers.fields where field.name.caseInsensitiveEquals("Host") { hosts += 1 }
            guard hosts == 1 else {
                throw HTTPError(400, hosts == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header",
                                closesConnection: true)
            }
        }
    }

    /// Request body framing. Rejects the ambiguous combinations that enable request
    /// smuggling: both Transfer-Encoding and Content-Length, or disagreeing lengths.
    static func requestFraming(_ headers: HTTPHeaders, minorVersion: Int) throws -> BodyFraming {
        let hasCodings = headers.contains("Transfer-Encoding"), hasLength = headers.contains("Content-Length")
        if !hasCodings, !hasLength { return .none }
        let codings = hasCodings ? headers.listValues("Transfer-Encoding") : []
        let lengths = hasLength ? headers.listValues("Content-Length") : []
        if hasCodings {
            guard lengths.isEmpty else {
                throw HTTPError.malformed("both Transfer-Encoding and Content-Length")
            }
            guard minorVersion >= 1 else {
                throw HTTPError.malformed("Transfer-Encoding in an HTTP/1.0 request")
            }
            if codings.isEmpty { throw HTTPError.malformed("empty Transfer-Encoding") }
            // Only plain chunked is understood; any other coding (gzip, chunked twice, or
            // chunked not last, which leaves the body's end unknown) is not implemented.
            guard codings.count == 1, codings[0].caseInsensitiveEquals("chunked") else {
                throw HTTPError(501, "unsupported Transfer-Encoding", closesConnection: true)
            }
            return .chunked
        }
        guard let first = lengths.first else {
            // A Content-Length header whose value is empty is as malformed as a bad one.
            if headers.contains("Content-Length") { throw HTTPError.malformed("empty Content-Length") }
            return .none
        }
        guard lengths.allSatisfy({ $0 == first }) else {
            throw HTTPError.malformed("conflicting Content-Length values")
        }
        return .length(try parseContentLength(first))
    }

    /// Digits only (no sign, no spaces), and small enough to fit.
    static func parseContentLength(_ text: String) throws -> Int {
        guard !text.isEmpty, text.utf8.count <= 18, text.utf8.allSatisfy({ $0 >= ASCII.zero && $0 <= ASCII.nine }),
              let value = Int(text) else {
            throw HTTPError.malformed("bad Content-Length")
        }
        return value
    }

    public var isHead: Bool { method == "HEAD" }
}

extension BodyFraming {
    /// The body length announced up front, if any.
    public var declaredLength: Int? {
        switch self {
        case .none: return 0
        case .length(let count): return count
        case .chunked, .untilClose: return nil
        }
    }
}
