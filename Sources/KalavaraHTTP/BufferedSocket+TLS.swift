import Foundation

/// The socket's calls when it speaks TLS: through OpenSSL on a non-blocking descriptor. A
/// blocking call (a worker's, a client's) waits in poll(2) for what OpenSSL wants, up to
/// the socket's timeout, so a stalled peer is `ConnectionError.timedOut` as without TLS.
extension BufferedSocket {
    /// Reads what has arrived, handshake first, for the event loop. Reads until OpenSSL holds
    /// nothing more (or the buffer is full), so no bytes wait inside OpenSSL where epoll
    /// cannot see them; what is still in the socket, epoll reports. Stopping there, not at
    /// OpenSSL's want-read, saves a recv(2) that would find nothing, on every request.
    func fillFromTLSWithoutBlocking() -> Availability {
        guard let tls else { return .closed }
        waitsToWrite = false
        var gotData = false
        while spaceAtEnd > 0 {
            switch tls.read(writablePointer, spaceAtEnd) {
            case .done(let count):
                appended(count)
                gotData = true
                if !tls.hasPending { return .data }
            case .wantRead:
                return gotData ? .data : .nothingYet
            case .wantWrite:
                waitsToWrite = true
                return gotData ? .data : .nothingYet
            case .closed, .failed:
                return gotData ? .data : .closed
            }
        }
        return .data
    }

    /// Decrypted bytes held inside OpenSSL, which epoll does not see: read them before
    /// deciding the connection is idle.
    var hasPendingTLSInput: Bool { tls?.hasPending ?? false }

    func sendWithoutBlocking(_ bytes: UnsafeRawBufferPointer, through tls: TLSSession) -> Int? {
        var offset = 0
        while offset < bytes.count {
            switch tls.write(bytes.baseAddress! + offset, bytes.count - offset) {
            case .done(let count): offset += count
            case .wantRead, .wantWrite: return offset
            case .closed, .failed: return nil
            }
        }
        return offset
    }

    func receive(into pointer: UnsafeMutableRawPointer, count: Int, through tls: TLSSession) throws -> Int {
        while true {
            switch tls.read(pointer, count) {
            case .done(let count): return count
            case .wantRead: try awaitReady(Int16(POLLIN), seconds: receiveTimeout)
            case .wantWrite: try awaitReady(Int16(POLLOUT), seconds: sendTimeout)
            case .closed: return 0
            case .failed: throw ConnectionError.closedByPeer
            }
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, through tls: TLSSession) throws {
        var offset = 0
        while offset < bytes.count {
            switch tls.write(bytes.baseAddress! + offset, bytes.count - offset) {
            case .done(let count): offset += count
            case .wantRead: try awaitReady(Int16(POLLIN), seconds: receiveTimeout)
            case .wantWrite: try awaitReady(Int16(POLLOUT), seconds: sendTimeout)
            case .closed, .failed: throw ConnectionError.closedByPeer
            }
        }
    }

    /// Completes the handshake, blocking up to the timeouts (a client's, before its request).
    func handshake() throws {
        guard let tls else { return }
        while true {
            switch tls.handshake() {
            case .done: return
            case .wantRead: try awaitReady(Int16(POLLIN), seconds: receiveTimeout)
            case .wantWrite: try awaitReady(Int16(POLLOUT), seconds: sendTimeout)
            case .closed, .failed:
                let reason = tls.verificationFailure.map { "certificate: \($0)" } ?? "the server closed it or speaks no TLS"
                throw TLSError(description: "TLS handshake failed: \(reason)")
            }
        }
    }

    /// A file without kernel TLS: read in pieces and written through OpenSSL. 256 KiB
    /// pieces: TLS records are 16 KiB, so one write makes 16 of them with one copy each.
    func copyFile(_ fileFD: Int32, offset: Int, count: Int, through tls: TLSSession) throws {
        let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: min(count, 256 * 1024), alignment: 16)
        defer { piece.deallocate() }
        var done = 0
        while done < count {
            let read = pread(fileFD, piece.baseAddress, min(piece.count, count - done), off_t(offset + done))
            if read < 0, errno == EINTR { continue }
            guard read > 0 else { throw ConnectionError.failed(errno: read == 0 ? EIO : errno) } // file shrank under us
            try write(UnsafeRawBufferPointer(rebasing: piece[0..<read]), through: tls)
            done += read
        }
    }

    /// What `spliceIn` does without kernel TLS: reads `count` bytes from `source` (a plain
    /// blocking socket with its own timeouts) and writes them through OpenSSL.
    func copyStream(from source: Int32, count: Int, through tls: TLSSession) throws {
        let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: min(count, 256 * 1024), alignment: 16)
        defer { piece.deallocate() }
        var left = count
        while left > 0 {
            let read = recv(source, piece.baseAddress, min(piece.count, left), 0)
            if read < 0, errno == EINTR { continue }
            if read == 0 { throw ConnectionError.closedByPeer }
            if read < 0 { throw errno == EAGAIN ? ConnectionError.timedOut : ConnectionError.failed(errno: errno) }
            try write(UnsafeRawBufferPointer(rebasing: piece[0..<read]), through: tls)
            left -= read
        }
    }

    /// Waits up to `seconds` (negative: without limit) for the descriptor to be ready.
    func awaitReady(_ events: Int16, seconds: Double) throws {
        var poller = pollfd(fd: fd, events: events, revents: 0)
        let milliseconds = seconds < 0 ? -1 : Int32(min(seconds * 1000, Double(Int32.max)).rounded(.up))
        while true {
            let result = poll(&poller, 1, milliseconds)
            if result > 0 { return }
            if result == 0 { throw ConnectionError.timedOut }
            if errno != EINTR { throw ConnectionError.failed(errno: errno) }
        }
    }

    /// Waits up to `seconds` for input: decrypted bytes held by OpenSSL count as input.
    func awaitInput(seconds: Double) -> Bool {
        if hasPendingTLSInput { return true }
        return (try? awaitReady(Int16(POLLIN), seconds: seconds)) != nil
    }
}
