import CLibSSL
import Foundation

/// One TLS connection (an OpenSSL `SSL` on a socket's descriptor), for `BufferedSocket`.
///
/// The descriptor is non-blocking: every operation either makes progress or says what it
/// waits for (`wantRead`/`wantWrite`), which the event loop maps onto epoll interest and a
/// worker onto poll(2) with the socket's timeout. The handshake happens on the first read
/// or write, so a server's event loop drives it like any other input.
///
/// Used by one thread at a time, like its socket.
final class TLSSession {
    private let ssl: OpaquePointer
    /// Set once the handshake is done.
    private(set) var established = false
    /// Whether the kernel encrypts this socket's sends (kTLS): sendfile and splice then work.
    private(set) var kernelSends = false
    /// A fatal error or the peer's close: no close_notify may be sent after it.
    private var broken = false

    /// What one operation did.
    enum Progress: Equatable {
        case done(Int)
        case wantRead
        case wantWrite
        /// The peer closed the stream (an orderly end of input).
        case closed
        /// A protocol or socket error: the connection is unusable.
        case failed
    }

    /// A session on `fd` from `context`; `host`: a client's expected server name or
    /// address, checked against the certificate. Nil if OpenSSL cannot make one.
    init?(context: TLSContext, fd: Int32, server: Bool, host: String? = nil) {
        guard let ssl = SSL_new(context.pointer) else { return nil }
        self.ssl = ssl
        guard SSL_set_fd(ssl, fd) == 1 else { return nil }
        if server {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            if let host, kalavara_ssl_expect_host(ssl, host, HTTPURL.isAddressLiteral(host) ? 1 : 0) != 1 {
                return nil
            }
        }
    }

    deinit { SSL_free(ssl) }

    /// Advances the handshake; `.done(0)` once it is complete.
    func handshake() -> Progress {
        if established { return .done(0) }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        guard result == 1 else { return progress(result) }
        established = true
        kernelSends = kalavara_ssl_ktls_send(ssl) != 0
        return .done(0)
    }

    /// Decrypted bytes into `pointer`; the handshake first if it is not done.
    func read(_ pointer: UnsafeMutableRawPointer, _ count: Int) -> Progress {
        if !established, case let step = handshake(), step != .done(0) { return step }
        ERR_clear_error()
        let result = SSL_read(ssl, pointer, Int32(min(count, Int(Int32.max))))
        return result > 0 ? .done(Int(result)) : progress(result)
    }

    /// Encrypts and sends bytes from `pointer` (perhaps not all: partial writes are on).
    func write(_ pointer: UnsafeRawPointer, _ count: Int) -> Progress {
        if !established, case let step = handshake(), step != .done(0) { return step }
        ERR_clear_error()
        let result = SSL_write(ssl, pointer, Int32(min(count, Int(Int32.max))))
        return result > 0 ? .done(Int(result)) : progress(result)
    }

    /// Whether OpenSSL holds bytes (decrypted, or read ahead from the socket) that the
    /// socket no longer shows as readable.
    var hasPending: Bool { SSL_has_pending(ssl) == 1 }

    /// Sends close_notify, once, without waiting for the peer's (the socket closes next).
    func close() {
        guard established, !broken else { return }
        broken = true
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
    }

    /// Why the peer's certificate did not verify, for a client's error message; nil if it
    /// did (or was not checked yet).
    var verificationFailure: String? {
        let result = SSL_get_verify_result(ssl)
        guard result != X509_V_OK else { return nil }
        return String(cString: X509_verify_cert_error_string(Int(result)))
    }

    private func progress(_ result: Int32) -> Progress {
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_ZERO_RETURN:
            broken = true
            return .closed
        default:
            broken = true
            ERR_clear_error()
            return .failed
        }
    }
}
