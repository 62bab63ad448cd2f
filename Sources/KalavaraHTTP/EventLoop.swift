import CEpoll
import Foundation
import KalavaraSupport
import Synchronization

/// Waits for idle connections to become readable and answers quick requests itself.
///
/// Why: with a thread per connection, every request on a keep-alive connection costs two
/// context switches (the thread wakes to read, sleeps after writing), which is most of
/// the cost of a redirect. Here one thread watches every idle connection with epoll and,
/// for a request without a body whose answer the daemon can give without blocking
/// (a route declared `.eventLoop`: an index lookup, a health check), parses, answers and goes
/// on to the next ready connection, as nginx does. Anything else (bodies, file answers,
/// fsyncs, calls to other daemons, errors) is handed to a worker thread that may block, and
/// comes back here once the connection is idle again.
///
/// A connection is owned either by this loop or by one worker, never both: the loop removes
/// it from epoll before a worker gets it, and adds it again when the worker gives it back.
/// While the loop owns it, events are level-triggered, so a quick request costs no
/// epoll_ctl at all.
public final class EventLoop: @unchecked Sendable {
    private let epoll: Int32
    private unowned let server: HTTPServer
    /// The connections this loop owns now, by descriptor; `stopping` ends the loop.
    private struct Watched {
        var connections: [Int32: ServerConnection] = [:]
        var stopping = false
    }
    private let watched = Mutex(Watched())
    /// Set once by `start`, before the thread runs; read by `stop`.
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    init(server: HTTPServer) throws {
        self.server = server
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw ServerError("epoll_create1: \(String(cString: strerror(errno)))") }
    }

    deinit { Glibc.close(epoll) }

    func start(name: String) {
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
        self.thread = thread
    }

    /// Starts (or resumes) watching a connection that has no request in progress.
    func watch(_ connection: ServerConnection) {
        connection.watched(now: server.configuration.clock.now())
        connection.watchesWritable = false
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLRDHUP.rawValue
        event.data.fd = connection.socket.fd
        // Published before it is registered: an event for a descriptor the loop cannot find
        // would be reported again on every wait (level-triggered) until it could, a busy
        // spin for as long as this thread happened to be descheduled.
        let published = watched.withLock { watched -> Bool in
            guard !watched.stopping else { return false }
            watched.connections[connection.socket.fd] = connection
            return true
        }
        guard published, epoll_ctl(epoll, EPOLL_CTL_ADD, connection.socket.fd, &event) == 0 else {
            if published { forget(connection) }
            server.close(connection)
            return
        }
    }

    /// Stops watching `connection`; false if this loop was not watching it.
    @discardableResult
    private func forget(_ connection: ServerConnection) -> Bool {
        watched.withLock { watched in
            guard watched.connections[connection.socket.fd] === connection else { return false }
            watched.connections[connection.socket.fd] = nil
            return true
        }
    }

    /// Stops the loop and closes every connection it holds (they are between requests).
    func stop() {
        watched.withLock { $0.stopping = true }
        if thread != nil { finished.wait() }
    }

    /// Thrown by a loop route's handler that finds it must block after all: the request
    /// goes to a worker, which runs the handler again.
    public struct MustHandOff: Error {
        public init() {}
    }

    /// Whether the calling thread is an event loop (for handlers that may run on either;
    /// a dictionary lookup, so only for rare paths).
    public static var onLoopThread: Bool { Thread.current.threadDictionary[loopMarker] != nil }
    private static let loopMarker = "kalavara.event-loop"

    private func run() {
        Thread.current.threadDictionary[Self.loopMarker] = true
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        let clock = server.configuration.clock
        var lastSweep = clock.now()
        while !watched.withLock({ $0.stopping }) {
            let count = events.withUnsafeMutableBufferPointer { epoll_wait(epoll, $0.baseAddress, Int32($0.count), 200) }
            let busySince = ContinuousClock.now
            for index in 0..<max(0, Int(count)) {
                let fd = events[index].data.fd
                guard let connection = watched.withLock({ $0.connections[fd] }) else { continue }
                handleReadable(connection)
            }
            let now = clock.now()
            if now - lastSweep >= 0.2 {
                sweepTimeouts(now)
                server.accessLog.rollWindow(now: monotonicSeconds())
                lastSweep = now
            }
            if count > 0 { server.httpMetrics.loopBusy.record(ContinuousClock.now - busySince) }
        }
        let remaining = watched.withLock { watched in
            defer { watched.connections.removeAll() }
            return Array(watched.connections.values)
        }
        remaining.forEach { server.close($0) }
        finished.signal()
    }

    private func handleReadable(_ connection: ServerConnection) {
        switch connection.serveOnLoop() {
        case .wait:
            // A TLS handshake whose flight the socket would not take waits for it to drain.
            let wantsWritable = connection.socket.waitsToWrite
            guard wantsWritable != connection.watchesWritable else { break }
            connection.watchesWritable = wantsWritable
            var event = epoll_event()
            // Not EPOLLRDHUP while waiting to write: a peer's FIN would wake the loop on every
            // wait (level-triggered) while OpenSSL only retries its blocked write. A full close
            // still comes as EPOLLHUP or EPOLLERR, and the write then fails.
            event.events = wantsWritable ? EPOLLOUT.rawValue : EPOLLIN.rawValue | EPOLLRDHUP.rawValue
            event.data.fd = connection.socket.fd
            epoll_ctl(epoll, EPOLL_CTL_MOD, connection.socket.fd, &event)
        case .handOff:
            forget(connection)
            // Out of epoll altogether (a disabled entry would still report hang-ups).
            epoll_ctl(epoll, EPOLL_CTL_DEL, connection.socket.fd, nil)
            server.workers.run { [server] in server.serveBlocking(connection) }
        default: // .close; the loop's transitions return nothing else
            forget(connection)
            server.close(connection)
        }
    }

    /// Idle keep-alive connections past the idle timeout are closed; a head that has not
    /// arrived whole within the read timeout gets a 408. Checked a few times a second.
    private func sweepTimeouts(_ now: Double) {
        let connections = watched.withLock { Array($0.connections.values) }
        for connection in connections {
            switch connection.timeoutCheck(now: now) {
            case .wait:
                break
            case .answerTimeoutAndClose:
                guard forget(connection) else { continue }
                connection.answerHeadTimeout()
                server.close(connection)
            default: // .close: idle too long, or evicted
                guard forget(connection) else { continue }
                server.close(connection)
            }
        }
    }
}

/// Worker threads for requests that may block. Threads are kept for reuse while idle (up
/// to `keepIdle` of them, for a while), so a hand-off rarely pays for creating a thread,
/// and a new thread is started whenever queued work outnumbers waiting threads, so one
/// long request never delays another.
public final class WorkerPool: @unchecked Sendable {
    /// Guards `queue` and `waiting`.
    private let lock = NSCondition()
    private var queue: [@Sendable () -> Void] = []
    private var waiting = 0
    private let keepIdle: Int
    private let idleSeconds: Double

    public init(keepIdle: Int = 16, idleSeconds: Double = 30) {
        self.keepIdle = keepIdle
        self.idleSeconds = idleSeconds
    }

    public func run(_ work: @escaping @Sendable () -> Void) {
        lock.lock()
        queue.append(work)
        let needThread = queue.count > waiting
        if !needThread { lock.signal() }
        lock.unlock()
        if needThread {
            let thread = Thread { [self] in loop() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    private func loop() {
        lock.lock()
        while true {
            if !queue.isEmpty {
                let work = queue.removeFirst()
                lock.unlock()
                work()
                lock.lock()
                continue
            }
            if waiting >= keepIdle { break }
            waiting += 1
            let signalled = lock.wait(until: Date(timeIntervalSinceNow: idleSeconds))
            waiting -= 1
            if !signalled, queue.isEmpty { break }
        }
        lock.unlock()
    }
}
