import Foundation
import KalavaraSupport
import Synchronization

/// The listener: accepts TCP connections, hands them to the event loops, and runs
/// requests that may block on worker threads.
///
/// Why this shape: every request of this store may block somewhere (fsync on a volume, a
/// synced RocksDB write on the master), and blocking handlers on a shared event loop would
/// let one slow disk stall every client. So the event loops only watch idle connections and
/// answer what can be answered at once (see `EventLoop`); everything else runs on a worker
/// thread of its own, where it may block, so a stalled client costs only its own thread.
/// `maxConnections` bounds the connections (and so the threads). A new connection to a full
/// server (or from an address at its cap) evicts the connection that has been idle longest
/// (see `admit`); only when every connection is busy with a request does it get a `503`,
/// instead of exhausting descriptors.
///
/// Sendable by hand: `loops`, `listenFD` and `boundPort` are written by `start` before any
/// other thread exists; everything else that changes is behind `lock`.
public final class HTTPServer: @unchecked Sendable {
    /// Where to listen and the limits that protect the server.
    public struct Configuration: Sendable {
        public var host: String
        var port: Int
        /// How long one read of a request (head or body) may stall before the client is
        /// dropped; a head must also arrive whole within it.
        public var readTimeout: Double = 30
        /// How long a keep-alive connection may sit between requests.
        public var idleTimeout: Double = 30
        /// How long a new connection has to deliver its first complete request head: a
        /// socket that connects and sends nothing (or trickles) must not hold a slot for
        /// the whole idle or read timeout.
        public var headTimeout: Double = 10
        /// Open client connections at most; past it the longest-idle one is evicted, and
        /// when none is idle a new one is refused with `503`.
        public var maxConnections: Int = 1024
        /// Open connections from one client address at most; past it that address's own
        /// longest-idle connection is evicted (`503` if none is idle). See `admit`.
        public var maxConnectionsPerAddress: Int = 256
        /// Which answers get an access-log line.
        public var accessLog: AccessLogMode = .errors
        /// A request body arriving slower than this (bytes/s, after 10 s) is dropped with
        /// `408` (0: no floor).
        public var minBodyRate: Double = 1024
        /// On shutdown, how long requests in flight may take to finish.
        var shutdownGrace: Double = 10
        /// Event loop threads. One keeps a small machine's second core for the disk and
        /// the workers; more help on a big machine.
        var eventLoops: Int = max(1, min(4, ProcessInfo.processInfo.activeProcessorCount / 2))
        /// A file answer up to this size made on the event loop is read into memory and sent
        /// from there (one page-cache read is cheaper than waking a thread); larger ones go
        /// out with sendfile from a worker.
        public var inlineFileBytes = 64 * 1024
        /// `--tls-cert`/`--tls-key`: the port speaks HTTPS only; `--tls-ca`: what this
        /// process's own calls trust (see `TLSTrust`).
        public var tls = TLSFiles()
        /// What the timeouts are measured on; tests drive a `ManualClock`.
        var clock: any ServerClock = MonotonicClock()

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    let configuration: Configuration
    /// Connections admitted at most: `configuration.maxConnections`, lowered if need be to
    /// what the open-file limit leaves after a reserve (see `connectionBudget`).
    let maxConnections: Int
    let router: Router
    let httpMetrics: HTTPMetrics
    let accessLog: AccessLog
    let workers = WorkerPool()
    private var loops: [EventLoop] = []
    private var nextLoop = 0
    private var listenFD: Int32 = -1
    public private(set) var boundPort = 0
    /// The certificate served, when the port speaks HTTPS (set by `start`).
    private var identity: TLSIdentity?

    /// Connections that have not delivered a first request head may hold this many slots
    /// at most: past it, a new connection evicts the oldest of them, so sockets that
    /// connect and send nothing are evicted before a served keep-alive client is.
    var freshCap: Int { max(8, maxConnections / 4) }
    /// Evicted connections not yet closed (they are shut down at once and closed by their
    /// loop within 0.2 s) may take the table this far past its caps, never further.
    static let evictionOvershoot = 32
    /// Connections from the cluster's own daemons (`trustPeer`) may exceed `maxConnections`
    /// by this many when every connection is busy, so a flood of slow requests from
    /// elsewhere cannot cut the master off its volumes. Taken from `descriptorReserve`.
    static let peerReserve = 32

    /// Guards `connections`, `fresh`, `perAddress`, `evicting`, `trustedPeers` and
    /// `acceptThreadDone`, and orders `stopping`'s one change against `admit`.
    private let lock = NSCondition()
    private var connections: [ObjectIdentifier: ServerConnection] = [:]
    /// The connections still waiting for their first head.
    private var fresh: [ObjectIdentifier: ServerConnection] = [:]
    /// Open connections by client address, evicted ones not counted.
    private var perAddress: [String: Int] = [:]
    /// Connections evicted but not yet closed.
    private var evicting = 0
    /// Addresses of the cluster's daemons, which may use `peerReserve`.
    private var trustedPeers: Set<String> = []
    /// Set once, by `stop` (holding `lock`); read without the lock on every request.
    private let stopping = Atomic<Bool>(false)
    private var acceptThreadDone = false

    /// A server answering with `router`'s routes, measuring itself into `metrics`.
    public init(configuration: Configuration, router: Router, metrics: Metrics) {
        self.configuration = configuration
        maxConnections = min(configuration.maxConnections, Self.connectionBudget())
        self.router = router
        accessLog = AccessLog(mode: configuration.accessLog)
        httpMetrics = HTTPMetrics(metrics: metrics, router: router)
    }

    /// Descriptors kept back from client connections: value files being read or written,
    /// RocksDB's files, calls to other daemons, the event loops' own.
    static let descriptorReserve = 256

    /// Raises the soft open-file limit to the hard one and returns how many client
    /// connections fit under it with the reserve kept: at Debian's default of 1,024, about
    /// 1,030 idle connections used to exhaust the master's descriptors (and once crashed it).
    static func connectionBudget() -> Int {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0 else { return Int.max }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        guard limit.rlim_cur < rlim_t(Int.max) else { return Int.max } // RLIM_INFINITY is the largest value
        return max(16, Int(limit.rlim_cur) - descriptorReserve)
    }

    /// Binds, listens and starts accepting. Throws a one-line error if the address is taken.
    public func start() throws {
        // A client that disconnects while we write must be an error return, not a signal.
        signal(SIGPIPE, SIG_IGN)
        try loadTLS()
        listenFD = try Self.listen(host: configuration.host, port: configuration.port)
        boundPort = Self.localPort(listenFD)
        for index in 0..<configuration.eventLoops {
            let loop = try EventLoop(server: self)
            loop.start(name: "event-loop-\(index)")
            loops.append(loop)
        }
        if maxConnections < configuration.maxConnections {
            Log.warning("--max-connections lowered from \(configuration.maxConnections) to \(maxConnections): "
                        + "the open-file limit allows no more (raise it with ulimit -n)")
        }
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "accept"
        thread.start()
    }

    /// Loads the TLS files: the CA this process's calls trust, and the certificate served.
    /// Either failing is a start-up error, with OpenSSL's reasons.
    private func loadTLS() throws {
        let files = configuration.tls
        do {
            if let authority = files.authority { try TLSTrust.use(authority: authority) }
            if let certificate = files.certificate, let key = files.key {
                identity = try TLSIdentity(certificate: certificate, key: key)
            }
        } catch let error as TLSError {
            throw ServerError(error.description)
        }
    }

    /// Whether the port speaks HTTPS.
    public var servesTLS: Bool { identity != nil }

    /// Loads renewed certificate files (`SIGHUP`): connections accepted from now on get
    /// them, those open keep what they started with. On a problem the certificate in force
    /// stays and the error says why. Returns the new certificate's serial number (hex).
    public func reloadTLS() throws -> String? {
        try identity?.reload()
    }

    var isStopping: Bool { stopping.load(ordering: .acquiring) }

    /// Graceful stop: no new connections, idle ones closed, requests in flight given up to
    /// `shutdownGrace` seconds to finish. Returns when all are done or the grace is over.
    public func stop() {
        lock.lock()
        stopping.store(true, ordering: .releasing)
        Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
        lock.unlock()
        loops.forEach { $0.stop() } // closes the connections that are between requests
        lock.lock()
        let deadline = Date(timeIntervalSinceNow: configuration.shutdownGrace)
        while !(connections.isEmpty && acceptThreadDone) {
            if !lock.wait(until: deadline) { break }
        }
        for connection in connections.values { connection.socket.shutdown() }
        lock.unlock()
    }

    // MARK: - Connections

    /// Runs on a worker: serves until the connection is idle, then gives it back to its loop
    /// (unless it was evicted meanwhile, which `IdleMark` allows only while it is idle again).
    func serveBlocking(_ connection: ServerConnection) {
        switch connection.serveUntilIdle() {
        case .giveBack where !connection.evicted: connection.loop.watch(connection)
        default: close(connection)
        }
    }

    /// Forgets a connection, then closes its socket: in that order, so `stop` never
    /// touches a descriptor that was closed and perhaps reused.
    func close(_ connection: ServerConnection) {
        lock.lock()
        let known = connections.removeValue(forKey: ObjectIdentifier(connection)) != nil
        if known {
            if connection.evicted { evicting -= 1 } else { forgetAddress(of: connection) }
        }
        fresh[ObjectIdentifier(connection)] = nil
        lock.broadcast()
        lock.unlock()
        if known { httpMetrics.openConnections.decrement() }
        connection.closed()
        connection.socket.close()
    }

    private func acceptLoop() {
        defer {
            lock.lock()
            acceptThreadDone = true
            Glibc.close(listenFD)
            lock.broadcast()
            lock.unlock()
        }
        while !isStopping {
            var address = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listenFD, $0, &length) }
            }
            if fd < 0 {
                switch errno {
                case EINTR, ECONNABORTED, EPROTO: continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors: back off instead of spinning; clients wait in the backlog.
                    Log.warning("accept: \(String(cString: strerror(errno))); backing off")
                    usleep(50_000)
                    continue
                default:
                    if !isStopping { Log.error("accept failed: \(String(cString: strerror(errno)))") }
                    return
                }
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            admit(fd, peer: Self.host(of: address))
        }
    }

    /// Admits a new connection, making room by evicting an idle one where a cap is reached.
    ///
    /// The rule, in one place: a connection the event loop holds between requests (or that
    /// has not sent a head yet) is evictable, the longest idle first; one a worker is
    /// serving is not. So what a client cannot do is hold slots by merely being connected:
    /// 1,100 sockets that each did `GET /health` and went quiet are evicted as real clients
    /// arrive. Three caps pick the candidates: headless connections past `freshCap` evict
    /// the oldest headless one; an address past `maxConnectionsPerAddress` evicts its own
    /// longest-idle one (so a crowd from one address cannot evict everyone else's); a full
    /// table evicts the longest-idle of all. What a client can still hold is busy
    /// connections, each bounded by the read timeout and `--min-body-rate`, and at most
    /// `maxConnectionsPerAddress` per address; the cluster's own daemons are exempt from that
    /// cap and keep `peerReserve` slots beyond the table even then.
    private func admit(_ fd: Int32, peer: String) {
        let socket = BufferedSocket(fd: fd, bufferSize: HTTPLimits.readBufferBytes)
        // With TLS the handshake comes with the client's first bytes, on the event loop,
        // bounded like a head that does not arrive (the head timeout, the fresh cap).
        if let identity, !socket.startTLS(identity.context, server: true) {
            socket.close()
            return
        }
        lock.lock()
        var room = !isStopping
        if room, fresh.count >= freshCap {
            room = evictLongestIdle(among: fresh.values)
        }
        // The cluster's own daemons are exempt: a master's or gateway's many concurrent
        // calls to a volume all come from one address.
        if room, perAddress[peer, default: 0] >= configuration.maxConnectionsPerAddress, !trustedPeers.contains(peer) {
            room = evictLongestIdle(among: connections.values.lazy.filter { $0.peer == peer })
        }
        if room, connections.count - evicting >= maxConnections {
            room = evictLongestIdle(among: connections.values)
                || (trustedPeers.contains(peer) && connections.count - evicting < maxConnections + Self.peerReserve)
        }
        guard room else {
            lock.unlock()
            refuse(socket, peer: peer)
            return
        }
        let loop = loops[nextLoop % loops.count]
        nextLoop += 1
        let connection = ServerConnection(socket: socket, server: self, loop: loop, peer: peer)
        connections[ObjectIdentifier(connection)] = connection
        fresh[ObjectIdentifier(connection)] = connection
        perAddress[peer, default: 0] += 1
        lock.unlock()
        httpMetrics.openConnections.increment()
        // Timeouts for the blocking reads and writes of workers.
        socket.setReceiveTimeout(configuration.readTimeout)
        socket.setSendTimeout(configuration.readTimeout)
        loop.watch(connection)
    }

    /// Evicts the connection among `candidates` idle longest, if any is idle: shut down at
    /// once (the client sees its keep-alive connection closed, as after an idle timeout),
    /// closed by its loop, and no longer counted against any cap. Holding `lock`.
    private func evictLongestIdle(among candidates: some Sequence<ServerConnection>) -> Bool {
        guard evicting < Self.evictionOvershoot else { return false }
        var victim: ServerConnection?
        var oldest = Double.infinity
        for connection in candidates {
            guard let since = connection.mark.idleSince, since < oldest else { continue }
            victim = connection
            oldest = since
        }
        // Its owner may have started a request since it was seen idle: then it is not ours
        // to shut down (see `IdleMark`), and the next new connection tries again.
        guard let victim, victim.mark.evict(ifIdleSince: oldest) else { return false }
        evicting += 1
        fresh[ObjectIdentifier(victim)] = nil
        forgetAddress(of: victim)
        // Safe from here: a connection in the table has not been closed, so its descriptor
        // is its own. Its loop sees the hang-up and closes it.
        victim.socket.shutdown()
        return true
    }

    /// Holding `lock`.
    private func forgetAddress(of connection: ServerConnection) {
        let left = perAddress[connection.peer, default: 1] - 1
        perAddress[connection.peer] = left > 0 ? left : nil
    }

    /// Marks the host of `url` (a volume's, the master's) as one of the cluster's daemons:
    /// connections from its addresses may use `peerReserve`.
    public func trustPeer(url: String) {
        guard let host = HTTPURL(url)?.host else { return }
        let addresses = Self.addresses(of: host)
        lock.lock()
        trustedPeers.formUnion(addresses)
        lock.unlock()
    }

    /// Requests answered since start-up.
    public var requestsAnswered: Int { httpMetrics.answered.load(ordering: .relaxed) }

    /// A connection delivered its first head: it no longer counts against `freshCap`.
    func delivered(_ connection: ServerConnection) {
        lock.lock()
        fresh[ObjectIdentifier(connection)] = nil
        lock.unlock()
    }

    /// Answers a connection over the cap without giving it a thread.
    private func refuse(_ socket: BufferedSocket, peer: String) {
        // Over TLS an answer needs a handshake first, which is what the refusal saves: the
        // client sees the connection closed.
        guard socket.tls == nil else {
            socket.close()
            return
        }
        socket.setSendTimeout(1)
        var response = HTTPResponse.text(503, "too many open connections, try again")
        response.headers.set("Retry-After", "1")
        let bytes = response.serializedHead(keepAlive: false) + Array("too many open connections, try again\n".utf8)
        let sent = (try? socket.write(bytes)) != nil ? bytes.count : 0
        socket.close()
        guard accessLog.logs(status: 503) else { return }
        accessLog.record(AccessLog.Entry(method: "-", path: "-", status: 503, explanation: response.explanation, sent: sent,
                                         elapsed: .zero, requestID: nil, user: nil, peer: peer))
    }

    // MARK: - Sockets

    private static func listen(host: String, port: Int) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &result)
        guard status == 0, let info = result else {
            throw ServerError("cannot resolve listen address \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw ServerError("cannot listen on \(host):\(port): \(message)")
        }
        guard Glibc.listen(fd, 1024) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw ServerError("listen on \(host):\(port): \(message)")
        }
        return fd
    }

    private static func localPort(_ fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
        }
        let family = storage.ss_family
        return withUnsafePointer(to: &storage) { pointer -> Int in
            if family == sa_family_t(AF_INET6) {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }
}

/// A start-up failure of a server, with a message fit for one log line.
struct ServerError: Error, CustomStringConvertible, Sendable {
    let description: String
    init(_ description: String) { self.description = description }
}
