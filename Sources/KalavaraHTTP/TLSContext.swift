import CLibSSL
import Foundation
import Synchronization

/// The TLS files a daemon is started with (`--tls-cert`, `--tls-key`, `--tls-ca`).
public struct TLSFiles: Sendable, Equatable {
    /// The certificate chain (PEM, leaf first) and its private key: the port speaks HTTPS.
    /// Both or neither.
    public var certificate: String?
    public var key: String?
    /// The CA the daemon's own calls verify other daemons against (nil: the system's store).
    public var authority: String?

    public init(certificate: String? = nil, key: String? = nil, authority: String? = nil) {
        self.certificate = certificate
        self.key = key
        self.authority = authority
    }
}

/// An OpenSSL `SSL_CTX`: the settings and certificates sessions are made from.
///
/// Immutable once made, so one context serves every thread at once; renewed certificates
/// become a new context (see `TLSIdentity`). A session holds a reference of its own on its
/// context (OpenSSL counts them), so a context replaced by a reload lives on exactly as long
/// as the connections made from it.
final class TLSContext: @unchecked Sendable {
    let pointer: OpaquePointer

    private init(server: Bool) throws {
        _ = Self.brokenPipesIgnored
        guard let pointer = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()) else {
            throw TLSError.openSSL("SSL_CTX_new")
        }
        self.pointer = pointer
        guard kalavara_ssl_ctx_min_tls12(pointer) == 1 else { throw TLSError.openSSL("TLS 1.2 minimum") }
        kalavara_ssl_ctx_options(pointer)
    }

    deinit { SSL_CTX_free(pointer) }

    /// OpenSSL writes to the socket with plain write(2), which raises SIGPIPE when the peer
    /// has gone (the process's end, by default); the writes must fail with EPIPE instead, as
    /// our own sends do with MSG_NOSIGNAL. Set once, before any session exists.
    private static let brokenPipesIgnored: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// A server's context: the chain in `certificate` (PEM, leaf first) and `key`, which
    /// must match.
    static func server(certificate: String, key: String) throws -> TLSContext {
        let context = try TLSContext(server: true)
        kalavara_ssl_ctx_no_resumption(context.pointer)
        guard SSL_CTX_use_certificate_chain_file(context.pointer, certificate) == 1 else {
            throw TLSError.openSSL("cannot load the certificate \(certificate)")
        }
        guard SSL_CTX_use_PrivateKey_file(context.pointer, key, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError.openSSL("cannot load the key \(key)")
        }
        guard SSL_CTX_check_private_key(context.pointer) == 1 else {
            throw TLSError.openSSL("the key \(key) does not match the certificate \(certificate)")
        }
        return context
    }

    /// A client's context: servers must present a chain to `authority` (a PEM file of CA
    /// certificates), or to the system's trust store when nil.
    static func client(authority: String?) throws -> TLSContext {
        let context = try TLSContext(server: false)
        if let authority {
            guard SSL_CTX_load_verify_locations(context.pointer, authority, nil) == 1 else {
                throw TLSError.openSSL("cannot load the CA file \(authority)")
            }
        } else {
            guard SSL_CTX_set_default_verify_paths(context.pointer) == 1 else {
                throw TLSError.openSSL("cannot load the system's trust store")
            }
        }
        SSL_CTX_set_verify(context.pointer, SSL_VERIFY_PEER, nil)
        return context
    }

    /// The served certificate's serial number in hex, for log lines.
    var serial: String {
        guard let hex = kalavara_ssl_ctx_serial(pointer) else { return "?" }
        defer { kalavara_openssl_free(hex) }
        return String(cString: hex)
    }
}

/// The certificate a server presents, replaced whole by `reload` (`SIGHUP`): connections
/// accepted afterwards get the new one, and those already open keep theirs.
final class TLSIdentity: Sendable {
    let files: (certificate: String, key: String)
    private let current: Mutex<TLSContext>

    init(certificate: String, key: String) throws {
        files = (certificate, key)
        current = Mutex(try TLSContext.server(certificate: certificate, key: key))
    }

    var context: TLSContext { current.withLock { $0 } }

    /// Loads the files again; on a problem the certificate in force stays (and the error
    /// says why). Returns the new certificate's serial number.
    func reload() throws -> String {
        let fresh = try TLSContext.server(certificate: files.certificate, key: files.key)
        current.withLock { $0 = fresh }
        return fresh.serial
    }
}

/// What this process's clients trust: set once at start-up from `--tls-ca` (the kalavara
/// command: `--tls-ca` or `KALAVARA_TLS_CA`); until then, and without it, the system's store.
public enum TLSTrust {
    private static let configured = Mutex<TLSContext?>(nil)

    /// Trusts the CA certificates in `file` (PEM) instead of the system's store.
    public static func use(authority file: String) throws {
        let context = try TLSContext.client(authority: file)
        configured.withLock { $0 = context }
    }

    /// The context `https://` calls are made with.
    static func clientContext() throws -> TLSContext {
        try configured.withLock { context in
            if let context { return context }
            let system = try TLSContext.client(authority: nil)
            context = system
            return system
        }
    }
}

/// A TLS set-up failure, with OpenSSL's reasons.
public struct TLSError: Error, CustomStringConvertible, Sendable {
    public let description: String

    /// `what` failed, followed by the reasons on this thread's OpenSSL error queue (which
    /// it empties).
    static func openSSL(_ what: String) -> TLSError {
        var reasons: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var text = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &text, text.count)
            reasons.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return TLSError(description: reasons.isEmpty ? what : "\(what): \(reasons.joined(separator: "; "))")
    }

    init(description: String) { self.description = description }
}
