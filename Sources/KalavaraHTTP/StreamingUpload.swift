import KalavaraSupport
/// A request whose body is sent piece by piece as it is produced: how a volume forwards an
/// upload to the other replicas while it is still arriving, without holding it in memory.
///
/// With a known length the body goes out under `Content-Length`; otherwise chunked.
/// A failed write is remembered rather than thrown at once, so `finish` can still read the
/// answer the peer sent before giving up (a `507` from a full disk, say).
public final class StreamingUpload {
    public let url: HTTPURL
    private let socket: BufferedSocket
    private let chunked: Bool
    private var writeError: Error?

    init(socket: BufferedSocket, url: HTTPURL, method: String, headers: HTTPHeaders, contentLength: Int?) throws {
        self.socket = socket
        self.url = url
        chunked = contentLength == nil
        let framing = chunked ? "Transfer-Encoding: chunked\r\n" : "Content-Length: \(contentLength!)\r\n"
        try socket.write(Array(HTTPClient.requestHead(method, url, headers, closing: true, framing: framing).utf8))
    }

    public var failed: Bool { writeError != nil }

    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard writeError == nil, bytes.count > 0 else { return }
        do {
            if chunked { try socket.write(Array((String(bytes.count, radix: 16) + "\r\n").utf8), more: true) }
            try socket.write(bytes, more: chunked)
            if chunked { try socket.write([ASCII.cr, ASCII.lf]) }
        } catch {
            writeError = error
        }
    }

    /// Ends the body and reads the answer.
    public func finish() throws -> ClientResponse {
        if writeError == nil, chunked {
            do { try socket.write(Array("0\r\n\r\n".utf8)) } catch { writeError = error }
        }
        do {
            return try HTTPClient.readResponse(socket, method: "PUT")
        } catch {
            throw writeError ?? error
        }
    }

    /// Drops the connection: the peer sees the body end early and discards what it has.
    public func abandon() { socket.close() }
}
