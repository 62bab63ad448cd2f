import Foundation

/// Serves the requests of one client connection, one after another, on its own thread.
///
/// A request runs to completion before the next head is read, so pipelined requests are
/// answered in order, and a client that floods requests without reading answers is held
/// back by TCP flow control rather than by buffers growing in the server.
final class ServerConnection {
    let socket: BufferedSocket
    private unowned let server: HTTPServer
    private let configuration: HTTPServer.Configuration

    private static let continueLine: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    init(socket: BufferedSocket, server: HTTPServer) {
        self.socket = socket
        self.server = server
        self.configuration = server.configuration
    }

    func run() {
        socket.setSendTimeout(configuration.readTimeout)
        while serveOneRequest() {}
    }

    /// Reads, handles and answers one request. Returns whether to keep the connection.
    private func serveOneRequest() -> Bool {
        let request: HTTPRequest
        do {
            guard let parsed = try readHead() else { return false }
            request = parsed
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

        var keepAlive = request.keepAlive && !server.isStopping
            && !(response.headers["Connection"]?.caseInsensitiveEquals("close") ?? false)
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

    /// Waits for the next request head. Returns nil when the client closes cleanly between
    /// requests or stays idle past the idle timeout.
    private func readHead() throws -> HTTPRequest? {
        // RFC 9112 §2.2: ignore empty lines before a request line.
        func skipLeadingLineBreaks() {
            let bytes = socket.buffered
            var count = 0
            while count < bytes.count, bytes[count] == ASCII.cr || bytes[count] == ASCII.lf { count += 1 }
            socket.consume(count)
        }
        skipLeadingLineBreaks()
        while socket.bufferedCount == 0 {
            server.connectionIsIdle(self, true)
            defer { server.connectionIsIdle(self, false) }
            if server.isStopping { return nil }
            socket.setReceiveTimeout(configuration.idleTimeout)
            do {
                guard try socket.fill() else { return nil }
            } catch ConnectionError.timedOut {
                return nil
            }
            skipLeadingLineBreaks()
        }

        // A head must arrive whole within the read timeout, however slowly it trickles in.
        socket.setReceiveTimeout(configuration.readTimeout)
        let deadline = monotonicSeconds() + configuration.readTimeout
        var scanned = 0
        while true {
            let bytes = socket.buffered
            if let length = MessageHeadParser.headLength(in: bytes, from: scanned) {
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
