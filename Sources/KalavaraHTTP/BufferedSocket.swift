import CEpoll
import Foundation

/// A connected TCP socket with a read buffer: the only HTTP type that touches a raw fd.
///
/// Sockets are blocking, with kernel timeouts (`SO_RCVTIMEO`/`SO_SNDTIMEO`) instead of a
/// poll per read: one system call per read on the hot path, and a stalled peer turns into
/// `ConnectionError.timedOut` rather than a thread stuck forever.
///
/// With TLS (`tls`), the same calls go through OpenSSL on a non-blocking descriptor, and
/// the timeouts are poll(2)'s (see `BufferedSocket+TLS`).
///
/// Sendable by hand: a socket is used by one thread at a time (its connection's owner),
/// and handed between threads only with its connection; `shutdown` alone may come from
/// another thread, and is a single system call on an immutable descriptor.
public final class BufferedSocket: @unchecked Sendable {
    public let fd: Int32
    private let storage: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    private var start = 0
    private var end = 0
    private(set) var receiveTimeout: Double = -1
    private(set) var sendTimeout: Double = -1
    private var closed = false
    /// The TLS session, when the connection speaks HTTPS.
    private(set) var tls: TLSSession?
    /// Event loop: the TLS session waits to write (a handshake's flight the socket would
    /// not take), so the loop must watch for the socket becoming writable, not readable.
    var waitsToWrite = false
    /// Client side: whether bytes of the current answer have arrived (a pooled connection
    /// that fails before any did was closed by the server while idle, and may be retried).
    var answerBytesSeen = false

    init(fd: Int32, bufferSize: Int = HTTPLimits.readBufferBytes) {
        self.fd = fd
        capacity = bufferSize
        storage = .allocate(capacity: bufferSize)
        var one: Int32 = 1
        // Heads and small bodies go out in one write; Nagle would only add delay.
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit {
        close()
        storage.deallocate()
    }

    // MARK: Reading

    /// Bytes received but not yet consumed.
    public var buffered: UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: storage + start, count: end - start)
    }

    public var bufferedCount: Int { end - start }

    public func consume(_ count: Int) {
        precondition(count <= end - start)
        start += count
        if start == end { start = 0; end = 0 }
    }

    /// Sets how long one read may wait; applied only when it changes.
    public func setReceiveTimeout(_ seconds: Double) {
        guard seconds != receiveTimeout else { return }
        receiveTimeout = seconds
        var value = Self.timeval(seconds)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    func setSendTimeout(_ seconds: Double) {
        sendTimeout = seconds
        var value = Self.timeval(seconds)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads more bytes into the buffer. Returns false at end of stream.
    /// The buffer must not be full (callers bound what they accumulate).
    @discardableResult
    public func fill() throws -> Bool {
        if start > 0, end == capacity {
            memmove(storage, storage + start, end - start)
            end -= start
            start = 0
        }
        precondition(end < capacity, "read buffer overflow")
        let count = try receive(into: storage + end, count: capacity - end)
        end += count
        return count > 0
    }

    /// Free space after the buffered bytes, where reads land, for `fillFromTLSWithoutBlocking`.
    var spaceAtEnd: Int { capacity - end }
    var writablePointer: UnsafeMutableRawPointer { UnsafeMutableRawPointer(storage + end) }
    func appended(_ count: Int) { end += count }

    /// What a read that must not block found.
    enum Availability { case data, nothingYet, closed }

    /// Reads whatever has arrived, without waiting (for the event loop).
    func fillWithoutBlocking() -> Availability {
        if start > 0, end == capacity {
            memmove(storage, storage + start, end - start)
            end -= start
            start = 0
        }
        guard end < capacity else { return .data }
        if tls != nil { return fillFromTLSWithoutBlocking() }
        while true {
            let result = recv(fd, storage + end, capacity - end, Int32(MSG_DONTWAIT))
            if result > 0 { end += result; return .data }
            if result == 0 { return .closed }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .nothingYet
            default: return .closed
            }
        }
    }

    /// Sends as much of `bytes` as the socket takes now. Returns the count sent, or nil if
    /// the connection failed.
    func sendWithoutBlocking(_ bytes: UnsafeRawBufferPointer) -> Int? {
        if let tls { return sendWithoutBlocking(bytes, through: tls) }
        var offset = 0
        while offset < bytes.count {
            let result = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            if result > 0 { offset += result; continue }
            if result < 0, errno == EINTR { continue }
            if result < 0, errno == EAGAIN || errno == EWOULDBLOCK { return offset }
            return nil
        }
        return offset
    }

    /// Reads into `destination`: buffered bytes first, else straight from the socket, so
    /// large bodies are not copied through the connection buffer. Returns 0 at end of stream.
    public func read(into destination: UnsafeMutableRawBufferPointer) throws -> Int {
        guard destination.count > 0 else { return 0 }
        if start < end {
            let count = min(destination.count, end - start)
            destination.baseAddress!.copyMemory(from: storage + start, byteCount: count)
            consume(count)
            return count
        }
        return try receive(into: destination.baseAddress!, count: destination.count)
    }

    private func receive(into pointer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let tls { return try receive(into: pointer, count: count, through: tls) }
        while true {
            let result = recv(fd, pointer, count, 0)
            if result >= 0 { return result }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: throw ConnectionError.timedOut
            case ECONNRESET, EPIPE, ENOTCONN, EBADF: throw ConnectionError.closedByPeer
            default: throw ConnectionError.failed(errno: errno)
            }
        }
    }

    // MARK: Writing

    /// Writes all of `bytes`. `more` tells the kernel further data follows at once
    /// (a file after its head), so both can share a packet.
    func write(_ bytes: UnsafeRawBufferPointer, more: Bool = false) throws {
        if let tls { return try write(bytes, through: tls) }
        var offset = 0
        let flags = Int32(MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
        while offset < bytes.count {
            let result = send(fd, bytes.baseAddress! + offset, bytes.count - offset, flags)
            if result > 0 { offset += result; continue }
            if result < 0, errno == EINTR { continue }
            throw Self.writeError(errno)
        }
    }

    public func write(_ bytes: [UInt8], more: Bool = false) throws {
        try bytes.withUnsafeBytes { try write($0, more: more) }
    }

    /// Sends `count` bytes of an open file from `offset` with sendfile(2): the bytes go from
    /// the page cache to the socket without passing through user space.
    func sendFile(_ fileFD: Int32, offset: Int, count: Int) throws {
        if let tls, !tls.kernelSends { return try copyFile(fileFD, offset: offset, count: count, through: tls) }
        var position = off_t(offset)
        var left = count
        while left > 0 {
            let result = sendfile(fd, fileFD, &position, min(left, 1 << 30))
            if result > 0 { left -= result; continue }
            if result == 0 { throw ConnectionError.failed(errno: EIO) } // file shrank under us
            if errno == EINTR { continue }
            if tls != nil, errno == EAGAIN { try awaitReady(Int16(POLLOUT), seconds: sendTimeout); continue }
            throw Self.writeError(errno)
        }
    }

    /// Sends `count` bytes arriving on `source` (another socket) without copying them through
    /// user space: splice(2) into a pipe, and from it into this socket. Both sockets' timeouts
    /// hold (a stalled source is `timedOut`).
    func spliceIn(from source: Int32, count: Int) throws {
        if let tls, !tls.kernelSends { return try copyStream(from: source, count: count, through: tls) }
        var ends: [Int32] = [-1, -1]
        guard Glibc.pipe(&ends) == 0 else { throw ConnectionError.failed(errno: errno) }
        defer {
            Glibc.close(ends[0])
            Glibc.close(ends[1])
        }
        _ = kalavara_pipe_size(ends[1], 1 << 20)
        var left = count
        while left > 0 {
            let moved = kalavara_splice(source, ends[1], UInt(min(left, 1 << 20)), 0)
            if moved == 0 { throw ConnectionError.closedByPeer }
            if moved < 0 {
                if errno == EINTR { continue }
                throw Self.writeError(errno)
            }
            var inPipe = moved
            while inPipe > 0 {
                let out = kalavara_splice(ends[0], fd, UInt(inPipe), left - moved > 0 ? 1 : 0)
                if out > 0 { inPipe -= out; continue }
                if out < 0, errno == EINTR { continue }
                if out < 0, tls != nil, errno == EAGAIN { try awaitReady(Int16(POLLOUT), seconds: sendTimeout); continue }
                throw Self.writeError(out == 0 ? EPIPE : errno)
            }
            left -= moved
        }
    }

    private static func writeError(_ code: Int32) -> ConnectionError {
        switch code {
        case EAGAIN, EWOULDBLOCK: return .timedOut
        case EPIPE, ECONNRESET, ENOTCONN: return .closedByPeer
        default: return .failed(errno: code)
        }
    }

    // MARK: Lifetime

    /// Wakes any thread blocked on this socket and stops further traffic, without
    /// releasing the descriptor (which another thread may still be using).
    func shutdown() {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Ends what this side sends (close_notify first with TLS), still reading.
    func shutdownWrites() {
        tls?.close()
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    public func close() {
        guard !closed else { return }
        closed = true
        tls?.close()
        _ = Glibc.close(fd)
    }

    /// Makes this an HTTPS connection: a server's (the handshake comes with the client's
    /// first bytes) or a client's expecting `host` in the server's certificate. The
    /// descriptor becomes non-blocking. False if OpenSSL could not make a session.
    func startTLS(_ context: TLSContext, server: Bool, host: String? = nil) -> Bool {
        guard let session = TLSSession(context: context, fd: fd, server: server, host: host) else { return false }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        tls = session
        return true
    }

    static func timeval(_ seconds: Double) -> Glibc.timeval {
        let whole = seconds.rounded(.down)
        return Glibc.timeval(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
    }
}
