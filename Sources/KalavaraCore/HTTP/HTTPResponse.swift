import Foundation

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
    public let count: Int?
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

    public var status: Int
    public var headers: HTTPHeaders
    public var body: Body

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: Body = .empty) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A short plain-text answer; used for every error so clients see a reason.
    public static func text(_ status: Int, _ message: String, headers: HTTPHeaders = HTTPHeaders()) -> HTTPResponse {
        var response = HTTPResponse(status: status, headers: headers, body: .bytes(Array((message + "\n").utf8)))
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

    public static func error(_ error: HTTPError) -> HTTPResponse {
        var response = text(error.status, error.message)
        for (name, value) in error.headers.sorted(by: { $0.key < $1.key }) { response.headers.set(name, value) }
        if error.closesConnection { response.headers.set("Connection", "close") }
        return response
    }

    /// This answer with a small file body read into memory, so the event loop can send it
    /// without sendfile (which may block); nil if the body is a file over `limit` bytes.
    /// For HEAD the file is not read: only its length matters.
    public func inlined(upTo limit: Int, forHead isHead: Bool) -> HTTPResponse? {
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
    /// bytes directly: this runs for every response.
    func serializedHead(keepAlive: Bool) -> [UInt8] {
        var head: [UInt8] = []
        head.reserveCapacity(256)
        head += Self.statusLines[status] ?? Array("HTTP/1.1 \(status) \(Self.reason(status))\r\n".utf8)
        for field in headers.fields {
            head += field.name.utf8
            head += [ASCII.colon, ASCII.space]
            head += field.value.utf8
            head += [ASCII.cr, ASCII.lf]
        }
        if !forbidsBody, !headers.contains("Content-Length"), !headers.contains("Transfer-Encoding") {
            head += Self.contentLengthPrefix
            head += String(bodyCount).utf8
            head += [ASCII.cr, ASCII.lf]
        }
        if !keepAlive, !headers.contains("Connection") { head += Self.connectionClose }
        head += HTTPDate.headerLine()
        return head
    }

    private static let contentLengthPrefix = Array("Content-Length: ".utf8)
    private static let connectionClose = Array("Connection: close\r\n".utf8)
    private static let statusLines: [Int: [UInt8]] = {
        var lines: [Int: [UInt8]] = [:]
        for status in [100, 200, 201, 204, 206, 302, 304, 307, 400, 404, 405, 408, 409, 413, 414, 416, 417, 431,
                       500, 501, 502, 503, 504, 505, 507] {
            lines[status] = Array("HTTP/1.1 \(status) \(reason(status))\r\n".utf8)
        }
        return lines
    }()

    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 206: return "Partial Content"
        case 302: return "Found"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 416: return "Range Not Satisfiable"
        case 417: return "Expectation Failed"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        case 507: return "Insufficient Storage"
        default: return "Status"
        }
    }
}
