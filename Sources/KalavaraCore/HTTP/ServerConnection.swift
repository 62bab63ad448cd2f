import Foundation

/// One client connection and the requests on it, served one after another.
///
/// Between requests a connection belongs to an `EventLoop`, which answers quick requests
/// itself (`serveQuickly`); a request that may block is served by a worker thread
/// (`serveUntilIdle`), which hands the connection back once nothing more has arrived.
/// A request runs to completion before the next head is read, so pipelined requests are
/// answered in order, and a client that floods requests without reading answers is held
/// back by TCP flow control rather than by buffers growing in the server.
final class ServerConnection {
    let socket: BufferedSocket
    private unowned let server: HTTPServer
    private let configuration: HTTPServer.Configuration
    unowned let loop: EventLoop

    /// When the connection last became idle (for the idle timeout).
    var idleSince = monotonicSeconds()
    /// When the first byte of the head being received arrived (for the read timeout).
    var headStartedAt: Double?
    /// How far the pending head has been searched for its end.
    private var scanned = 0
    /// Answer bytes the event loop could not send without blocking; a worker sends them.
    private var pendingOutput: [UInt8] = []
    private var closeAfterPendingOutput = false

    private static let continueLine: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    init(socket: BufferedSocket, server: HTTPServer, loop: EventLoop) {
        self.socket = socket
        self.server = server
        self.configuration = server.configuration
        self.loop = loop
    }

    // MARK: - On the event loop

    enum QuickOutcome {
        /// Nothing (more) to do until the client sends more.
        case wait
        /// The connection is done.
        case close
        /// A request that may block: a worker takes over.
        case handOff
    }

    /// Reads what has arrived and answers every complete request the daemon's quick
    /// handler can answer; never blocks.
    func serveQuickly() -> QuickOutcome {
        switch socket.fillWithoutBlocking() {
        case .closed: return .close
        case .data, .nothingYet: break
        }
        while true {
            skipLeadingLineBreaks()
            if socket.bufferedCount == 0 {
                headStartedAt = nil
                idleSince = monotonicSeconds()
                return .wait
            }
            if headStartedAt == nil { headStartedAt = monotonicSeconds() }
            let bytes = socket.buffered
            guard let length = MessageHeadParser.headLength(in: bytes, from: scanned) else {
                scanned = bytes.count
                return bytes.count >= HTTPLimits.maxHeadBytes ? .handOff : .wait // the worker answers 431
            }
            // Anything unusual (errors, bodies, answers that may block) is the worker's.
            guard length <= HTTPLimits.maxHeadBytes, let quick = server.quickHandler, !server.isStopping,
                  let request = try? MessageHeadParser.parseRequest(UnsafeBufferPointer(rebasing: bytes[0..<length])),
                  request.framing == .none || request.framing == .length(0),
                  let response = quick(request) else {
                return .handOff
            }
            if case .file = response.body { return .handOff }
            socket.consume(length)
            scanned = 0
            headStartedAt = nil
            let keepAlive = request.keepAlive && !Self.closes(response)
            guard sendWithoutBlocking(response, isHead: request.isHead, keepAlive: keepAlive) else { return .close }
            if !pendingOutput.isEmpty {
                closeAfterPendingOutput = !keepAlive
                return .handOff
            }
            if !keepAlive { return .close }
        }
    }

    /// Sends a small answer with non-blocking writes; what does not fit now is kept in
    /// `pendingOutput`. Returns false if the connection failed.
    @discardableResult
    func sendWithoutBlocking(_ response: HTTPResponse, isHead: Bool = false, keepAlive: Bool) -> Bool {
        var bytes = response.serializedHead(keepAlive: keepAlive)
        if !isHead, !response.forbidsBody, case .bytes(let body) = response.body { bytes += body }
        guard let sent = bytes.withUnsafeBytes({ socket.sendWithoutBlocking($0) }) else { return false }
        if sent < bytes.count { pendingOutput = Array(bytes[sent...]) }
        return true
    }

    // MARK: - On a worker thread

    /// Serves requests, blocking as needed, until the connection is idle (returns true: back
    /// to the event loop) or must close (false).
    func serveUntilIdle() -> Bool {
        if !pendingOutput.isEmpty {
            guard (try? socket.write(pendingOutput)) != nil else { return false }
            pendingOutput = []
            if closeAfterPendingOutput { return false }
        }
        while true {
            skipLeadingLineBreaks()
            if socket.bufferedCount == 0 { return !server.isStopping }
            guard serveOneRequest() else { return false }
        }
    }

    /// Reads, handles and answers one request. Returns whether to keep the connection.
    private func serveOneRequest() -> Bool {
        let request: HTTPRequest
        do {
            request = try readHead()
        } catch let error as HTTPError {
            send(.error(error), isHead: false, keepAlive: false)
            lingeringClose()
            return false
        } catch ConnectionError.timedOut {
            send(.error(HTTPError(408, "request head not received in time", closesConnection: true)),
                 isHead: false, keepAlive: false)
            return false
        } catch {
            return false
        }

        let body = MessageBody(socket: socket, framing: request.framing,
                               beforeFirstRead: request.expectsContinue ? { [socket] in
                                   try socket.write(Self.continueLine)
                               } : nil)
        var response: HTTPResponse
        do {
            response = try server.handler(request, body)
        } catch let error as HTTPError {
            response = .error(error)
        } catch ConnectionError.timedOut {
            response = .error(HTTPError(408, "request body stalled", closesConnection: true))
        } catch is ConnectionError {
            return false // the client is gone: nobody to answer
        } catch {
            Log.error("\(request.method) \(request.path): \(error)")
            response = .error(HTTPError(500, "internal error"))
        }

        var keepAlive = request.keepAlive && !server.isStopping && !Self.closes(response)
        var unreadBody = false
        if !body.isComplete {
            if keepAlive { keepAlive = body.discardRemaining(limit: HTTPLimits.maxDrainBytes) }
            unreadBody = !body.isComplete
        }
        guard send(response, isHead: request.isHead, keepAlive: keepAlive) else { return false }
        if !keepAlive {
            if unreadBody { lingeringClose() }
            return false
        }
        return true
    }

    /// Reads the rest of a head that has begun to arrive. It must arrive whole within the
    /// read timeout of its first byte, however slowly it trickles in.
    private func readHead() throws -> HTTPRequest {
        let deadline = (headStartedAt ?? monotonicSeconds()) + configuration.readTimeout
        defer { headStartedAt = nil }
        while true {
            let bytes = socket.buffered
            if let length = MessageHeadParser.headLength(in: bytes, from: scanned) {
                scanned = 0
                guard length <= HTTPLimits.maxHeadBytes else {
                    throw HTTPError(431, "request head over \(HTTPLimits.maxHeadBytes) bytes", closesConnection: true)
                }
                let request = try MessageHeadParser.parseRequest(UnsafeBufferPointer(rebasing: bytes[0..<length]))
                socket.consume(length)
                return request
            }
            scanned = bytes.count
            guard bytes.count < HTTPLimits.maxHeadBytes else {
                throw HTTPError(431, "request head over \(HTTPLimits.maxHeadBytes) bytes", closesConnection: true)
            }
            guard monotonicSeconds() < deadline else { throw ConnectionError.timedOut }
            guard try socket.fill() else { throw ConnectionError.closedByPeer }
        }
    }

    /// RFC 9112 §2.2: empty lines before a request line are ignored.
    private func skipLeadingLineBreaks() {
        let bytes = socket.buffered
        var count = 0
        while count < bytes.count, bytes[count] == ASCII.cr || bytes[count] == ASCII.lf { count += 1 }
        if count > 0 {
            socket.consume(count)
            scanned = 0
        }
    }

    private static func closes(_ response: HTTPResponse) -> Bool {
        response.headers["Connection"]?.caseInsensitiveEquals("close") ?? false
    }

    /// Writes a response; returns false if the client could not take it.
    @discardableResult
    private func send(_ response: HTTPResponse, isHead: Bool, keepAlive: Bool) -> Bool {
        var head = response.serializedHead(keepAlive: keepAlive)
        do {
            if isHead || response.forbidsBody {
                try socket.write(head)
                return true
            }
            switch response.body {
            case .empty:
                try socket.write(head)
            case .bytes(let bytes):
                head.append(contentsOf: bytes) // one write, one packet for small answers
                try socket.write(head)
            case .file(let file, let offset, let count):
                try socket.write(head, more: true)
                try socket.sendFile(file.fd, offset: offset, count: count)
            }
            return true
        } catch {
            return false
        }
    }

    /// Closing a socket with unread input makes the kernel send a reset, which can destroy
    /// the answer we just wrote before the client reads it. So: stop sending, then read and
    /// discard for a short while, as nginx's lingering close does.
    private func lingeringClose() {
        _ = Glibc.shutdown(socket.fd, Int32(SHUT_WR))
        socket.setReceiveTimeout(0.5)
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        let deadline = monotonicSeconds() + 2
        while monotonicSeconds() < deadline {
            let count = (try? scratch.withUnsafeMutableBytes { try socket.read(into: $0) }) ?? 0
            if count == 0 { break }
        }
    }
}

/// Seconds on a clock that never jumps; for timeouts and durations.
public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
