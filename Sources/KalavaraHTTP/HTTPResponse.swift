import Foundation
import KalavaraSupport

/// An open file whose bytes a response sends; the descriptor closes when the response is done.
public final class OpenFile: Sendable {
    public let fd: Int32
    /// Runs once the descriptor is closed (the volume's store counts its open value files).
    private let onClose: (@Sendable () -> Void)?
    public init(fd: Int32, onClose: (@Sendable () -> Void)? = nil) {
        self.fd = fd
        self.onClose = onClose
    }
    deinit {
        Glibc.close(fd)
        onClose?()
    }
}

/// A body produced while it is sent: `produce` hands the connection's writer each piece,
/// blocking as needed. With a `count`, if it throws or produces fewer bytes, the connection
/// closes (the client sees the answer cut short, never a wrong one); without one, the body
/// goes chunked (the response must say `Transfer-Encoding: chunked`).
/// Sendable by hand: it is made by a handler and consumed once by the same worker thread.
public final class BodyStream: @unchecked Sendable {
    let count: Int?
    let produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void
    /// Instead of `produce`: `prefix`, then the rest of `count` spliced from this socket.
    let splice: (prefix: [UInt8], fd: Int32)?
    /// Runs once the answer is sent or abandoned (closes the source).
    let finished: () -> Void

    public init(count: Int?, finished: @escaping () -> Void = {},
                produce: @escaping ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) {
        self.count = count
        self.produce = produce
        self.finished = finished
        splice = nil
    }

    /// `count` bytes: `source.prefix`, then the rest as it arrives on `source.fd`, moved by
    /// splice(2) from that socket to the client's, never through user space.
    public init(count: Int, splicing source: (prefix: [UInt8], fd: Int32), finished: @escaping () -> Void = {}) {
        self.count = count
        splice = source
        produce = { _ in }
        self.finished = finished
    }

    deinit { finished() }
}

/// A response a handler returns. The connection adds framing headers and writes it.
public struct HTTPResponse: Sendable {
    /// Where the answer's bytes come from.
    public enum Body: Sendable {
        case empty
        case bytes([UInt8])
        /// `count` bytes of `file` from `offset`, sent with sendfile(2).
        case file(OpenFile, offset: Int, count: Int)
        /// Bytes a producer writes as they come (a proxied answer): worker routes only.
        case stream(BodyStream)
    }

    var status: Int
    public var headers: HTTPHeaders
    public var body: Body
    /// An error answer's one-line reason (what its body tells the client), for the log:
    /// a refusal the operator cannot see is one nobody can explain.
    public var explanation: String?

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: Body = .empty) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A short plain-text answer; used for every error so clients see a reason.
    public static func text(_ status: Int, _ message: String, headers: HTTPHeaders = HTTPHeaders()) -> HTTPResponse {
        var response = HTTPResponse(status: status, headers: headers, body: .bytes(Array((message + "\n").utf8)))
        if status >= 400 { response.explanation = message }
        response.headers.set("Content-Type", "text/plain; charset=utf-8")
        return response
    }

    /// A JSON answer (Codable): keys sorted (the same text every time), slashes unescaped, newline-ended.
    public static func json<Value: Encodable>(_ status: Int, _ value: Value) throws -> HTTPResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        var response = HTTPResponse(status: status, body: .bytes(Array(try encoder.encode(value)) + [ASCII.lf]))
        response.headers.set("Content-Type", "application/json")
        return response
    }

    public static func redirect(_ status: Int, to location: String) -> HTTPResponse {
        var headers = HTTPHeaders()
        headers.add("Location", location)
        return HTTPResponse(status: status, headers: headers)
    }

    static func error(_ error: HTTPError) -> HTTPResponse {
        var response = text(error.status, error.message)
        for (name, value) in error.headers.sorted(by: { $0.key < $1.key }) { response.headers.set(name, value) }
        if error.closesConnection { response.headers.set("Connection", "close") }
        return response
    }

    /// This answer with a small file body read into memory, so the event loop can send it
    /// without sendfile (which may block); nil if the body is a file over `limit` bytes.
    /// For HEAD the file is not read: only its length matters.
    func inlined(upTo limit: Int, forHead isHead: Bool) -> HTTPResponse? {
        guard case .file(let file, let offset, let count) = body else { return self }
        var copy = self
        if isHead {
            copy.headers.set("Content-Length", String(count))
            copy.body = .empty
            return copy
        }
        guard count <= limit else { return nil }
        var bytes = [UInt8](repeating: 0, count: count)
        let read = bytes.withUnsafeMutableBytes { pread(file.fd, $0.baseAddress, count, off_t(offset)) }
        guard read == count else { return nil }
        copy.body = .bytes(bytes)
        return copy
    }

    var bodyCount: Int {
        switch body {
        case .empty: return 0
        case .bytes(let bytes): return bytes.count
        case .file(_, _, let count): return count
        case .stream(let stream): return stream.count ?? 0
        }
    }

    /// Statuses that never carry a body (RFC 9110 §6.4.1).
    var forbidsBody: Bool { status < 200 || status == 204 || status == 304 }

    /// The status line and headers, framing included, as bytes ready to send. Built as
    /// bytes directly, separators appended byte by byte (an array literal for each was two
    /// allocations a field): this runs for every response.
    func serializedHead(keepAlive: Bool) -> [UInt8] {
        var head: [UInt8] = []
        head.reserveCapacity(256)
        head += Self.statusLines[status] ?? Array("HTTP/1.1 \(status) \(Self.reason(status))\r\n".utf8)
        for field in headers.fields {
            head += field.name.utf8
            head.append(ASCII.colon)
            head.append(ASCII.space)
            head += field.value.utf8
            head.append(ASCII.cr)
            head.append(ASCII.lf)
        }
        if !forbidsBody, !headers.contains("Content-Length"), !headers.contains("Transfer-Encoding") {
            head += Self.contentLengthPrefix
            head += String(bodyCount).utf8
            head.append(ASCII.cr)
            head.append(ASCII.lf)
        }
        if !keepAlive, !headers.contains("Connection") { head += Self.connectionClose }
        head += HTTPDate.headerLine()
        return head
    }

    private static let contentLengthPrefix = Array("Content-Length: ".utf8)
    private static let connectionClose = Array("Connection: close\r\n".utf8)
    /// Every status line we may send, built once: the status with its reason phrase.
    private static let statusLines: [Int: [UInt8]] = reasons.reduce(into: [:]) { lines, entry in
        lines[entry.key] = Array("HTTP/1.1 \(entry.key) \(entry.value)\r\n".utf8)
    }

    /// The standard reason phrases (RFC 9110 §15, WebDAV's 207/423/424/507 from RFC 4918,
    /// 428/429/431/511 from RFC 6585). The phrase is informative only, but clients print it
    /// (`403 Forbidden`, not `403 Status`), so every status we can send has its own.
    static let reasons: [Int: String] = [
        100: "Continue", 101: "Switching Protocols",
        200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information", 204: "No Content",
        205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
        300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
        307: "Temporary Redirect", 308: "Permanent Redirect",
        400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
        405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
        409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
        414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable", 417: "Expectation Failed",
        421: "Misdirected Request", 422: "Unprocessable Content", 423: "Locked", 424: "Failed Dependency",
        425: "Too Early", 426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
        431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
        500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
        504: "Gateway Timeout", 505: "HTTP Version Not Supported", 506: "Variant Also Negotiates",
        507: "Insufficient Storage", 508: "Loop Detected", 511: "Network Authentication Required",
    ]

    /// A status outside the table gets its class's generic phrase, never a made-up word.
    public static func reason(_ status: Int) -> String {
        if let phrase = reasons[status] { return phrase }
        switch status / 100 {
        case 1: return "Informational"
        case 2: return "Success"
        case 3: return "Redirection"
        case 4: return "Client Error"
        default: return "Server Error"
        }
    }
}
