import Foundation
import KalavaraSupport
import Synchronization

/// One client connection and the requests on it, served one after another.
///
/// Between requests a connection belongs to an `EventLoop`, which answers requests whose
/// route runs on the loop itself (`serveOnLoop`); a request that may block is handed, parsed,
/// to a worker thread (`serveUntilIdle`), which gives the connection back once nothing more
/// has arrived. A request runs to completion before the next head is read, so pipelined
/// requests are answered in order, and a client that floods requests without reading
/// answers is held back by TCP flow control rather than by buffers growing in the server.
///
/// Sendable by hand: exactly one thread owns a connection at a time (the loop while it is
/// in epoll, else one worker), and ownership passes through the worker pool's lock and
/// epoll_ctl, which order the memory accesses.
final class ServerConnection: @unchecked Sendable {
    let socket: BufferedSocket
    private unowned let server: HTTPServer
    private let configuration: HTTPServer.Configuration
    unowned let loop: EventLoop
    /// The client's IP address, for the access log, the per-address cap and the
    /// authentication limiter.
    let peer: String
    /// Where it is in its life (see `ConnectionState`). Only its owner reads or changes
    /// it (see above), through `transition`, which publishes it in `mark` for others.
    private(set) var state: ConnectionState
    /// Whether it is idle and since when, for the accepting thread that picks a connection
    /// to evict, with the handshake that makes an eviction and a request exclusive.
    let mark: IdleMark

    /// Whether its loop watches it for writability rather than input (a TLS handshake
    /// waiting to send; see `BufferedSocket.waitsToWrite`). The loop's alone.
    var watchesWritable = false

    /// The context of the request being served (see `RequestContext`).
    private let context = RequestContext()
    /// Evicted to make room (see `HTTPServer.admit`): shut down at once, closed by its loop,
    /// and none of its requests started since. Read by any thread (the mark is atomic).
    var evicted: Bool { mark.isEvicted }

    private static let continueLine: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    init(socket: BufferedSocket, server: HTTPServer, loop: EventLoop, peer: String) {
        self.socket = socket
        self.peer = peer
        self.server = server
        self.configuration = server.configuration
        self.loop = loop
        let now = server.configuration.clock.now()
        mark = IdleMark(idleSince: now)
        state = ConnectionState(acceptedAt: now)
    }

    /// Applies one transition of `state` and publishes its idle time in `mark` if that
    /// changed: the one place the two are kept in step. A head's claim on the mark is not
    /// made here but by `mark.publish` itself, whose outcome is the transition's input.
    @inline(__always)
    private func transition(_ change: (inout ConnectionState) -> ConnectionState.Action) -> ConnectionState.Action {
        let before = state.idleSince
        let action = change(&state)
        let after = state.idleSince
        if after != before { mark.publish(idleSince: after) }
        return action
    }

    /// By its owner, when the loop watches it again.
    func watched(now: Double) {
        _ = transition { $0.watched(now: now); return .wait }
    }

    /// By its owner, when it is closed.
    func closed() {
        _ = transition { $0.lost() }
    }

    /// By the loop's timeout sweep: what the timeouts, or an eviction, ask of it.
    func timeoutCheck(now: Double) -> ConnectionState.Action {
        if evicted { return transition { $0.evictionSeen() } }
        return transition {
            $0.timeoutCheck(now: now, readTimeout: configuration.readTimeout, idleTimeout: configuration.idleTimeout,
                            headTimeout: configuration.headTimeout)
        }
    }

    // MARK: - On the event loop

    /// Reads what has arrived and answers every complete request whose route runs on the
    /// loop; never blocks. Anything else is handed off parsed. Returns `.wait` (nothing
    /// more until the client sends more), `.close`, or `.handOff` (a worker takes over,
    /// with `state` holding what it starts with).
    func serveOnLoop() -> ConnectionState.Action {
        switch socket.fillWithoutBlocking() {
        case .closed: return transition { $0.lost() }
        case .data, .nothingYet: break
        }
        let now = configuration.clock.now()
        while true {
            if skipLeadingLineBreaks() { state.lineBreaksSkipped() }
            if socket.bufferedCount == 0, socket.hasPendingTLSInput {
                switch socket.fillWithoutBlocking() {
                case .data: continue
                case .closed: return transition { $0.lost() } // the peer's close_notify
                case .nothingYet: break
                }
            }
            if socket.bufferedCount == 0 { return transition { $0.nothingPending(now: now) } }
            guard case .scan(let scanned) = transition({ $0.bytesPending(now: now) }) else { return transition { $0.lost() } }
            let bytes = socket.buffered
            guard let length = MessageHeadParser.headLength(in: bytes, from: scanned), length <= HTTPLimits.maxHeadBytes else {
                if bytes.count >= HTTPLimits.maxHeadBytes {
                    return state.headRefused(Self.headTooLarge, claimed: mark.publish(idleSince: nil))
                }
                let incomplete = transition { $0.headIncomplete(scanned: bytes.count) }
                // A full buffer may have left the rest of the head decrypted inside OpenSSL,
                // where epoll does not see it: read it now (the buffer compacts to take it).
                if socket.hasPendingTLSInput, socket.fillWithoutBlocking() == .data { continue }
                return incomplete
            }
            // A whole head: from here the request is served, unless an eviction came first.
            guard case .serve(let firstHead) = state.headComplete(claimed: mark.publish(idleSince: nil)) else { return .close }
            if firstHead { server.delivered(self) }
            let exchange = Exchange(route: nil, started: .now, headBytes: length)
            let request: HTTPRequest
            do {
                request = attached(try MessageHeadParser.parseRequest(UnsafeBufferPointer(rebasing: bytes[0..<length])))
            } catch {
                return state.handOff(.badHead(error as? HTTPError ?? HTTPError.malformed("unreadable request head")))
            }
            socket.consume(length)
            let action: ConnectionState.Action
            switch answerOnLoop(request, exchange) {
            case .handOff(let work): action = state.handOff(work)
            case .sent(let keepAlive): action = transition { $0.answered(keepAlive: keepAlive, now: now) }
            case .failed: action = transition { $0.lost() }
            case .pending(let rest, let keepAlive): action = state.handOff(.pendingOutput(rest, closeAfter: !keepAlive))
            }
            guard action == .next else { return action }
        }
    }

    /// The largest body a request answered on the event loop may have (all of it received).
    static let loopBodyBytes = 64 * 1024

    private enum LoopAnswer {
        case sent(keepAlive: Bool)
        case pending([UInt8], keepAlive: Bool)
        case handOff(ConnectionState.Work)
        case failed
    }

    /// Answers on the loop what may be answered there: a bodiless request to a loop route,
    /// or to no route at all (404/405). Everything else becomes a worker's job.
    private func answerOnLoop(_ request: HTTPRequest, _ exchange: Exchange) -> LoopAnswer {
        var exchange = exchange
        // A small body already received whole never makes the loop wait: such a request
        // may be answered here too (the master's redirect of a PUT drops it).
        var bodyBytes = 0
        switch request.framing {
        case .none: break
        case .length(let count) where count <= Self.loopBodyBytes && count <= socket.bufferedCount: bodyBytes = count
        default: return .handOff(.request(request, exchange))
        }
        guard !server.isStopping else { return .handOff(.request(request, exchange)) }
        var response: HTTPResponse
        switch routed(request) {
        case .failure(let unrouted):
            response = unrouted.response
            socket.consume(bodyBytes)
        case .success((let index, let route)):
            exchange.route = index
            guard route.execution == .eventLoop else { return .handOff(.request(request, exchange)) }
            let body = MessageBody(socket: socket, framing: bodyBytes > 0 ? .length(bodyBytes) : .none)
            do {
                response = try route.handler(request, body)
            } catch let error as HTTPError {
                response = .error(error)
            } catch {
                // The worker runs it again and reports, with the body as it came.
                guard body.bytesRead == 0 else { return .failed }
                return .handOff(.request(request, exchange))
            }
            socket.consume(body.knownRemaining ?? 0)
            if case .stream = response.body { return .handOff(.answer(response, request, exchange)) }
            if case .file = response.body {
                guard let inlined = response.inlined(upTo: configuration.inlineFileBytes, forHead: request.isHead) else {
                    return .handOff(.answer(response, request, exchange))
                }
                response = inlined
            }
        }
        let keepAlive = request.keepAlive && !Self.closes(response)
        guard let (sent, total) = sendWithoutBlocking(response, isHead: request.isHead, keepAlive: keepAlive) else {
            return .failed
        }
        recordAnswer(request, response, exchange, received: exchange.headBytes + bodyBytes, sent: total.count)
        if sent < total.count { return .pending(Array(total[sent...]), keepAlive: keepAlive) }
        return .sent(keepAlive: keepAlive)
    }

    /// Sends a small answer with non-blocking writes. Returns the bytes sent and the whole
    /// answer, or nil if the connection failed.
    func sendWithoutBlocking(_ response: HTTPResponse, isHead: Bool = false, keepAlive: Bool) -> (Int, [UInt8])? {
        var bytes = response.serializedHead(keepAlive: keepAlive)
        if !isHead, !response.forbidsBody, case .bytes(let body) = response.body { bytes += body }
        guard let sent = bytes.withUnsafeBytes({ socket.sendWithoutBlocking($0) }) else { return nil }
        return (sent, bytes)
    }

    // MARK: - On a worker thread

    /// Does the job the loop handed over, then serves further requests, blocking as needed,
    /// until the connection is idle (returns `.giveBack`: back to the event loop) or must
    /// close (`.close`).
    func serveUntilIdle() -> ConnectionState.Action {
        guard let work = state.takeWork() else { return transition { $0.lost() } }
        switch work {
        case .pendingOutput(let bytes, let closeAfter):
            guard (try? socket.write(bytes)) != nil, !closeAfter else { return transition { $0.lost() } }
        case .badHead(let error):
            sendUnparsed(.error(error))
            lingeringClose()
            return transition { $0.lost() }
        case .request(let request, let exchange):
            guard serve(request, exchange) else { return transition { $0.lost() } }
        case .answer(let response, let request, let exchange):
            guard finish(response, request, exchange, body: nil) else { return transition { $0.lost() } }
        }
        while true {
            skipLeadingLineBreaks()
            // Decrypted bytes inside OpenSSL are not seen by epoll: read them here. What OpenSSL
            // holds may be no request at all (a key update, an alert): the loop waits for one.
            if socket.bufferedCount == 0 {
                guard socket.hasPendingTLSInput else { return state.workerIdle(stopping: server.isStopping) }
                switch socket.fillWithoutBlocking() {
                case .data: break
                case .closed: return transition { $0.lost() }
                case .nothingYet: return state.workerIdle(stopping: server.isStopping)
                }
            }
            let request: HTTPRequest, exchange: Exchange
            do {
                (request, exchange) = try readHead()
            } catch let error as HTTPError {
                sendUnparsed(.error(error))
                lingeringClose()
                return transition { $0.lost() }
            } catch ConnectionError.timedOut {
                sendUnparsed(.error(Self.headTimeout))
                return transition { $0.lost() }
            } catch {
                return transition { $0.lost() }
            }
            guard serve(request, exchange) else { return transition { $0.lost() } }
        }
    }

    /// Runs a request's handler, answers, and says whether to keep the connection. The
    /// route is the one the loop resolved, if it did: a request is routed once.
    private func serve(_ request: HTTPRequest, _ exchange: Exchange) -> Bool {
        var exchange = exchange
        let body = MessageBody(socket: socket, framing: request.framing,
                               beforeFirstRead: request.expectsContinue ? { [socket] in
                                   try socket.write(Self.continueLine)
                               } : nil)
        body.rateFloor = configuration.minBodyRate
        body.clock = configuration.clock
        var response: HTTPResponse
        do {
            let route: Route
            if let index = exchange.route {
                route = server.router.routes[index]
            } else {
                switch routed(request) {
                case .failure(let unrouted):
                    return finish(unrouted.response, request, exchange, body: body)
                case .success((let index, let resolved)):
                    exchange.route = index
                    route = resolved
                }
            }
            response = try route.handler(request, body)
        } catch let error as HTTPError {
            response = .error(error)
        } catch ConnectionError.timedOut {
            response = .error(HTTPError(408, "request body stalled or slower than the server's --min-body-rate", closesConnection: true))
        } catch is ConnectionError {
            return false // the client is gone: nobody to answer
        } catch {
            Log.error("\(request.method) \(request.path): \(error)")
            response = .error(HTTPError(500, "internal error"))
        }
        return finish(response, request, exchange, body: body)
    }

    /// Sends an answer, reading what is left of the body first when the connection is to
    /// be kept; returns whether it is kept.
    private func finish(_ response: HTTPResponse, _ request: HTTPRequest, _ exchange: Exchange, body: MessageBody?) -> Bool {
        var keepAlive = request.keepAlive && !server.isStopping && !Self.closes(response)
        var unreadBody = false
        if let body, !body.isComplete {
            if keepAlive { keepAlive = body.discardRemaining(limit: HTTPLimits.maxDrainBytes) }
            unreadBody = !body.isComplete
        }
        let sent = send(response, isHead: request.isHead, keepAlive: keepAlive)
        recordAnswer(request, response, exchange, received: exchange.headBytes + (body?.bytesRead ?? 0), sent: sent ?? 0)
        guard sent != nil else { return false }
        if !keepAlive {
            if unreadBody { lingeringClose() }
            return false
        }
        return true
    }

    /// Measures and logs one answer (see `AccessLog`).
    private func recordAnswer(_ request: HTTPRequest, _ response: HTTPResponse, _ exchange: Exchange, received: Int, sent: Int) {
        server.httpMetrics.record(route: exchange.route, status: response.status, started: exchange.started,
                                  received: received, sent: sent)
        guard server.accessLog.logs(status: response.status) else { return }
        server.accessLog.record(AccessLog.Entry(
            method: request.method, path: request.path, status: response.status, explanation: response.explanation,
            sent: sent, elapsed: .now - exchange.started, requestID: AccessLog.requestID(request, response),
            user: request.context?.user, peer: peer))
    }

    /// The loop's answer to a head that did not arrive in time: sent without blocking, logged.
    func answerHeadTimeout() {
        let response = HTTPResponse.error(Self.headTimeout)
        logUnparsed(response, sent: sendWithoutBlocking(response, keepAlive: false)?.0, started: .now)
    }

    /// Answers a head that could not be parsed, and logs it.
    private func sendUnparsed(_ response: HTTPResponse) {
        let started = ContinuousClock.now
        logUnparsed(response, sent: send(response, isHead: false, keepAlive: false), started: started)
    }

    /// An answer with no request to name (`-` for method and path).
    private func logUnparsed(_ response: HTTPResponse, sent: Int?, started: ContinuousClock.Instant) {
        guard server.accessLog.logs(status: response.status) else { return }
        server.accessLog.record(AccessLog.Entry(
            method: "-", path: "-", status: response.status, explanation: response.explanation, sent: sent ?? 0,
            elapsed: .now - started, requestID: nil, user: nil, peer: peer))
    }

    /// Reads the rest of a head that has begun to arrive. It must arrive whole within the
    /// read timeout of its first byte, however slowly it trickles in.
    private func readHead() throws -> (HTTPRequest, Exchange) {
        let clock = configuration.clock
        let deadline = clock.now() + configuration.readTimeout
        var scanned = 0
        while true {
            let bytes = socket.buffered
            if let length = MessageHeadParser.headLength(in: bytes, from: scanned) {
                guard length <= HTTPLimits.maxHeadBytes else { throw Self.headTooLarge }
                let exchange = Exchange(route: nil, started: .now, headBytes: length)
                let request = attached(try MessageHeadParser.parseRequest(UnsafeBufferPointer(rebasing: bytes[0..<length])))
                socket.consume(length)
                return (request, exchange)
            }
            scanned = bytes.count
            guard bytes.count < HTTPLimits.maxHeadBytes else { throw Self.headTooLarge }
            guard clock.now() < deadline else { throw ConnectionError.timedOut }
            guard try socket.fill() else { throw ConnectionError.closedByPeer }
        }
    }

    /// `request` with this connection's address and its context, cleared of the last
    /// request's user.
    private func attached(_ request: HTTPRequest) -> HTTPRequest {
        var request = request
        request.peer = peer
        context.user = nil
        request.context = context
        return request
    }

    /// RFC 9112 §2.2: empty lines before a request line are ignored. True if any were.
    @discardableResult
    private func skipLeadingLineBreaks() -> Bool {
        let bytes = socket.buffered
        var count = 0
        while count < bytes.count, bytes[count] == ASCII.cr || bytes[count] == ASCII.lf { count += 1 }
        guard count > 0 else { return false }
        socket.consume(count)
        return true
    }

    /// A request no route takes, with its answer (404, or 405 with `Allow`).
    private struct Unrouted: Error {
        let response: HTTPResponse
    }

    private func routed(_ request: HTTPRequest) -> Result<(Int, Route), Unrouted> {
        switch server.router.resolve(request) {
        case .route(let index, let route): return .success((index, route))
        case .notFound: return .failure(Unrouted(response: Self.noSuchEndpoint))
        case .methodNotAllowed(let allowed): return .failure(Unrouted(response: .error(.methodNotAllowed(allowed))))
        }
    }

    static let noSuchEndpoint = HTTPResponse.text(404, "no such endpoint")
    static let headTooLarge = HTTPError(431, "request head over \(HTTPLimits.maxHeadBytes) bytes", closesConnection: true)
    static let headTimeout = HTTPError(408, "request head not received in time", closesConnection: true)

    private static func closes(_ response: HTTPResponse) -> Bool {
        response.headers["Connection"]?.caseInsensitiveEquals("close") ?? false
    }

    /// Closing a socket with unread input makes the kernel send a reset, which can destroy
    /// the answer we just wrote before the client reads it. So: stop sending, then read and
    /// discard for a short while, as nginx's lingering close does.
    private func lingeringClose() {
        socket.shutdownWrites()
        socket.setReceiveTimeout(0.5)
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        let clock = configuration.clock
        let deadline = clock.now() + 2
        while clock.now() < deadline {
            let count = (try? scratch.withUnsafeMutableBytes { try socket.read(into: $0) }) ?? 0
            if count == 0 { break }
        }
    }
}
