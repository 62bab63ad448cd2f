import Foundation

/// The answer to a client request, body read into memory (daemon-to-daemon calls are small).
public struct ClientResponse: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// An answer whose body has not been read yet (see `HTTPClient.open`).
public final class OpenAnswer {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: MessageBody
    private let socket: BufferedSocket

    init(status: Int, headers: HTTPHeaders, body: MessageBody, socket: BufferedSocket) {
        self.status = status
        self.headers = headers
        self.body = body
        self.socket = socket
    }

    /// Hands the rest of the body to `sink` piece by piece.
    public func pump(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = try body.read(into: buffer)
            if count == 0 { return }
            try sink(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
    }

    /// For a body of known length: the bytes of it already read with the head, and the
    /// socket the rest will arrive on, for a proxy to splice (see `BodyStream`). The body must
    /// not be read any other way afterwards. Nil for a chunked or close-delimited body.
    /// Nil too over TLS: the bytes on the socket are encrypted.
    public func spliceSource() -> (prefix: [UInt8], fd: Int32)? {
        guard socket.tls == nil, let remaining = body.knownRemaining else { return nil }
        let count = min(socket.bufferedCount, remaining)
        let prefix = Array(socket.buffered.prefix(count))
        socket.consume(count)
        return (prefix, socket.fd)
    }

    public func close() { socket.close() }
}

/// Signs the requests an `HTTPClient` sends: the cluster's signature on calls between its
/// daemons (KalavaraCore's `SignedCall`).
public protocol RequestSigner: Sendable {
    /// Adds the signature fields to a request about to be sent. `body` nil: a streamed body
    /// of `length` bytes (nil: chunked), whose digest is left unsigned.
    func sign(_ headers: inout HTTPHeaders, method: String, target: String, body: [UInt8]?, length: Int?)
    /// Whether `headers` carry a signature already.
    func isSigned(_ headers: HTTPHeaders) -> Bool
}

/// A small blocking HTTP/1.1 client for calls between daemons: commits, registration,
/// health checks. It keeps idle keep-alive connections per host so a commit per PUT does
/// not pay a TCP (or TLS) handshake, and it parses answers with the server's own parser.
/// `https://` URLs speak TLS, the server's certificate verified against `TLSTrust`.
public final class HTTPClient: @unchecked Sendable {
    let timeout: Double
    /// In a signed cluster: signs every request this client sends.
    let signer: (any RequestSigner)?
    private let maxIdlePerHost: Int
    private let lock = NSLock()
    private var idle: [String: [BufferedSocket]] = [:]
    /// The largest answer body read into memory.
    static let maxResponseBody = 16 * 1024 * 1024

    public init(timeout: Double = 5, maxIdlePerHost: Int = 32, signer: (any RequestSigner)? = nil) {
        self.timeout = timeout
        self.signer = signer
        self.maxIdlePerHost = maxIdlePerHost
    }

    /// Sends one request and reads the answer. Throws `ConnectionError` when the server
    /// cannot be reached or the exchange breaks.
    public func send(_ method: String, _ url: HTTPURL, headers: HTTPHeaders = HTTPHeaders(),
                     body: [UInt8] = []) throws -> ClientResponse {
        let headers = signed(method, url, headers: headers, body: body)
        let length = !body.isEmpty || method == "POST" || method == "PUT" ? "Content-Length: \(body.count)\r\n" : ""
        let message = Array(Self.requestHead(method, url, headers, closing: false, framing: length).utf8) + body

        // A pooled connection may have been closed by the server while idle; if it fails
        // before any answer byte arrives, the request was not processed: retry once, fresh.
        if let socket = takeIdle(url.origin) {
            do {
                return try exchange(socket, message, method: method, url: url)
            } catch let failure as StaleConnection {
                _ = failure
            }
        }
        let socket = try Self.connect(url, timeout: timeout)
        do {
            return try exchange(socket, message, method: method, url: url)
        } catch is StaleConnection {
            throw ConnectionError.closedByPeer
        }
    }

    /// The headers with the signature added (unless they carry one already, or there is no
    /// signer): for callers that need the signature they send (health checks bind the
    /// answer's signature to it).
    public func signed(_ method: String, _ url: HTTPURL, headers: HTTPHeaders, body: [UInt8] = []) -> HTTPHeaders {
        guard let signer, !signer.isSigned(headers) else { return headers }
        var headers = headers
        signer.sign(&headers, method: method, target: url.pathAndQuery, body: body, length: body.count)
        return headers
    }

    /// A request head: request line, Host, `Connection: close` if `closing`, the fields, then
    /// `framing` (the body's Content-Length or Transfer-Encoding line, or nothing).
    static func requestHead(_ method: String, _ url: HTTPURL, _ headers: HTTPHeaders, closing: Bool, framing: String) -> String {
        var head = "\(method) \(url.pathAndQuery) HTTP/1.1\r\nHost: \(url.authority)\r\n"
        if closing { head += "Connection: close\r\n" }
        for field in headers.fields { head += "\(field.name): \(field.value)\r\n" }
        return head + framing + "\r\n"
    }

    private struct StaleConnection: Error {}

    private func exchange(_ socket: BufferedSocket, _ message: [UInt8], method: String,
                          url: HTTPURL) throws -> ClientResponse {
        do {
            try socket.write(message)
        } catch {
            throw StaleConnection()
        }
        let response: ClientResponse
        do {
            response = try Self.readResponse(socket, method: method)
        } catch ConnectionError.closedByPeer where socket.bufferedCount == 0 && !Self.answerStarted(socket) {
            throw StaleConnection()
        }
        let closes = response.headers.listValues("Connection").contains { $0.caseInsensitiveEquals("close") }
        if !closes, response.headers["Content-Length"] != nil || response.headers["Transfer-Encoding"] != nil
            || method == "HEAD" || response.status == 204 || response.status == 304 {
            putIdle(url.origin, socket)
        }
        return response
    }

    /// Whether any byte of an answer has been consumed on this socket (set by readResponse).
    private static func answerStarted(_ socket: BufferedSocket) -> Bool { socket.answerBytesSeen }

    /// Reads one answer (skipping interim 1xx answers) and its whole body.
    static func readResponse(_ socket: BufferedSocket, method: String) throws -> ClientResponse {
        let (status, headers) = try readHead(socket)
        let body = MessageBody(socket: socket, framing: try responseFraming(status, headers, method: method))
        do {
            return ClientResponse(status: status, headers: headers, body: try body.readAll(limit: maxResponseBody))
        } catch is HTTPError {
            throw ConnectionError.failed(errno: EPROTO)
        }
    }

    /// Reads an answer's head, skipping interim 1xx answers.
    static func readHead(_ socket: BufferedSocket) throws -> (status: Int, headers: HTTPHeaders) {
        while true {
            var scanned = 0
            var length: Int?
            socket.answerBytesSeen = false
            while true {
                length = MessageHeadParser.headLength(in: socket.buffered, from: scanned)
                if length != nil { break }
                scanned = socket.bufferedCount
                guard scanned < HTTPLimits.maxHeadBytes else { throw ConnectionError.failed(errno: EPROTO) }
                guard try socket.fill() else { throw ConnectionError.closedByPeer }
                socket.answerBytesSeen = true
            }
            socket.answerBytesSeen = true
            let parsed: (status: Int, headers: HTTPHeaders)
            do {
                parsed = try MessageHeadParser.parseResponse(UnsafeBufferPointer(rebasing: socket.buffered[0..<length!]))
            } catch {
                throw ConnectionError.failed(errno: EPROTO)
            }
            socket.consume(length!)
            if parsed.status >= 200 { return parsed } // 100 Continue and friends: the real answer follows
        }
    }

    /// A GET (or another bodiless request) whose answer body is handed to `sink` piece by
    /// piece as it arrives, never whole in memory: for downloads of any size. Returns the
    /// status and headers; `sink` sees the body only of a 2xx answer (others are read into
    /// `errorBody`, up to 64 KiB). On a fresh connection, closed afterwards.
    public func download(_ method: String = "GET", _ url: HTTPURL, headers: HTTPHeaders = HTTPHeaders(),
                         onHead: (Int, HTTPHeaders) throws -> Void = { _, _ in },
                         sink: (UnsafeRawBufferPointer) throws -> Void) throws -> (status: Int, headers: HTTPHeaders, errorBody: [UInt8]) {
        let answer = try open(method, url, headers: headers)
        defer { answer.close() }
        guard (200..<300).contains(answer.status) else {
            return (answer.status, answer.headers, (try? answer.body.readAll(limit: 64 * 1024)) ?? [])
        }
        try onHead(answer.status, answer.headers)
        try answer.pump(sink)
        return (answer.status, answer.headers, [])
    }

    /// Sends a bodiless request on a fresh connection and returns its answer with the body
    /// still unread, for the caller to stream (`OpenAnswer.pump`) and then close.
    public func open(_ method: String = "GET", _ url: HTTPURL, headers: HTTPHeaders = HTTPHeaders()) throws -> OpenAnswer {
        let headers = signed(method, url, headers: headers)
        let socket = try Self.connect(url, timeout: timeout)
        do {
            try socket.write(Array(Self.requestHead(method, url, headers, closing: true, framing: "").utf8))
            let (status, answerHeaders) = try Self.readHead(socket)
            let body = MessageBody(socket: socket, framing: try Self.responseFraming(status, answerHeaders, method: method))
            return OpenAnswer(status: status, headers: answerHeaders, body: body, socket: socket)
        } catch {
            socket.close()
            throw error
        }
    }

    /// Opens a request whose body the caller streams (see `StreamingUpload`); always on a
    /// fresh connection, closed afterwards.
    public func startUpload(_ method: String, _ url: HTTPURL, headers: HTTPHeaders = HTTPHeaders(),
                            contentLength: Int?) throws -> StreamingUpload {
        var headers = headers
        signer?.sign(&headers, method: method, target: url.pathAndQuery, body: nil, length: contentLength)
        let socket = try Self.connect(url, timeout: timeout)
        return try StreamingUpload(socket: socket, url: url, method: method, headers: headers, contentLength: contentLength)
    }

    static func responseFraming(_ status: Int, _ headers: HTTPHeaders, method: String) throws -> BodyFraming {
        if method == "HEAD" || status < 200 || status == 204 || status == 304 { return .none }
        if headers.contains("Transfer-Encoding") { return .chunked }
        if let length = headers["Content-Length"] {
            guard let value = try? HTTPRequest.parseContentLength(length) else {
                throw ConnectionError.failed(errno: EPROTO)
            }
            return .length(value)
        }
        return .untilClose
    }

    // MARK: Pool

    private func takeIdle(_ key: String) -> BufferedSocket? {
        lock.lock()
        defer { lock.unlock() }
        return idle[key]?.popLast()
    }

    private func putIdle(_ key: String, _ socket: BufferedSocket) {
        lock.lock()
        defer { lock.unlock() }
        if idle[key, default: []].count < maxIdlePerHost { idle[key, default: []].append(socket) }
    }

    // MARK: Connecting

    /// Opens a TCP connection with a bounded connect time, then blocking I/O with timeouts;
    /// for `https`, completes a TLS handshake that verifies the server's certificate
    /// (chain to the trusted CA, and the URL's host named in it).
    public static func connect(_ url: HTTPURL, timeout: Double) throws -> BufferedSocket {
        let socket = try connectTCP(url, timeout: timeout)
        guard url.isSecure else { return socket }
        do {
            guard socket.startTLS(try TLSTrust.clientContext(), server: false, host: url.host) else {
                throw TLSError.openSSL("cannot start TLS to \(url.authority)")
            }
            try socket.handshake()
        } catch let error as TLSError {
            socket.close()
            throw ConnectionError.tls(error.description)
        } catch {
            socket.close()
            throw error
        }
        return socket
    }

    private static func connectTCP(_ url: HTTPURL, timeout: Double) throws -> BufferedSocket {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(url.host, String(url.port), &hints, &result) == 0, let first = result else {
            throw ConnectionError.failed(errno: EHOSTUNREACH)
        }
        defer { freeaddrinfo(result) }
        var lastError = ECONNREFUSED
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        while let info = candidate {
            candidate = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { lastError = errno; continue }
            var connected = Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0
            if !connected, errno == EINPROGRESS {
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&poller, 1, Int32(timeout * 1000)) == 1 {
                    var code: Int32 = 0
                    var size = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &size)
                    connected = code == 0
                    lastError = code == 0 ? lastError : code
                } else {
                    lastError = ETIMEDOUT
                }
            } else if !connected {
                lastError = errno
            }
            guard connected else { Glibc.close(fd); continue }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            let socket = BufferedSocket(fd: fd, bufferSize: HTTPLimits.readBufferBytes)
            socket.setReceiveTimeout(timeout)
            socket.setSendTimeout(timeout)
            return socket
        }
        throw lastError == ETIMEDOUT ? ConnectionError.timedOut : ConnectionError.failed(errno: lastError)
    }
}
