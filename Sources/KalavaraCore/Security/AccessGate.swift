import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// Who may call a route, declared with the route (see `Route.access`) and enforced by the
/// router before the handler runs, so no handler can forget it.
public enum Access: Sendable, Equatable {
    /// Anyone: `/health`, `/metrics`.
    case open
    /// Clients with this right (`--auth-file`); a daemon of the cluster too.
    case client(Right)
    /// The cluster's daemons only (`/internal/`): a signed call. `streamed`: the body is
    /// read as a stream, so its digest may be left unsigned (its length is signed).
    case cluster(streamed: Bool)
    /// A volume's `/store/`: the handler checks the master's signed ticket for the key.
    case ticket
    /// `POST /admin/add-volume`: a volume's heartbeat is a cluster call; an operator's add
    /// needs `admin` (and, in a signed cluster, the volume's proof, see `Master.addVolume`).
    case registration
}

/// The security policy of one daemon: the cluster secret (`--secret-file`) and the client
/// credentials (`--auth-file`), either or both absent for an open daemon.
final class AccessGate: Sendable {
    let secret: ClusterSecret?
    let credentials: Credentials?

    init(secret: ClusterSecret? = nil, credentials: Credentials? = nil) {
        self.secret = secret
        self.credentials = credentials
    }

    static let open = AccessGate()

    /// The answer that refuses `request`, or nil to let it through.
    func refusal(_ request: HTTPRequest, _ access: Access) -> HTTPResponse? {
        switch access {
        case .open, .ticket:
            return nil
        case .cluster(let streamed):
            return clusterRefusal(request, streamed: streamed)
        case .registration:
            if request.headers[VolumeHeaders.heartbeat] != nil { return clusterRefusal(request, streamed: false) }
            return clientRefusal(request, .admin)
        case .client(let right):
            return clientRefusal(request, right)
        }
    }

    /// Whether this gate can refuse anything for `access` (the router skips it otherwise).
    func mayRefuse(_ access: Access) -> Bool {
        switch access {
        case .open, .ticket: return false
        case .client: return credentials != nil
        case .cluster: return secret != nil
        case .registration: return secret != nil || credentials != nil
        }
    }

    /// Whether the request carries a valid signature of this cluster.
    func isClusterCall(_ request: HTTPRequest, streamed: Bool = false) -> Bool {
        guard let secret else { return false }
        return SignedCall.verify(request, secret: secret, streamed: streamed) == .valid
    }

    private func clusterRefusal(_ request: HTTPRequest, streamed: Bool) -> HTTPResponse? {
        guard let secret else { return nil }
        switch SignedCall.verify(request, secret: secret, streamed: streamed) {
        case .valid: return nil
        case .unsigned: return .text(403, "this endpoint is for the cluster's daemons: the call needs the cluster's signature")
        case .invalid(let reason): return .text(403, "refused: \(reason)")
        }
    }

    /// The answer to an address that failed to log in too often (see `AuthFailureLimiter`).
    static func tooManyFailures(retryAfter seconds: Int) -> HTTPResponse {
        var answer = HTTPResponse.text(429, "too many failed logins from this address; retry in \(seconds) s")
        answer.headers.set("Retry-After", String(seconds))
        return answer
    }

    private func clientRefusal(_ request: HTTPRequest, _ right: Right) -> HTTPResponse? {
        guard let credentials else { return nil }
        // A daemon of the cluster (the S3 gateway, a volume) may do what any client may.
        if request.headers[SignedCall.signatureHeader] != nil, isClusterCall(request) { return nil }
        let authorization = request.headers["Authorization"]
        let peer = request.peer
        if authorization != nil, let wait = credentials.failures.retryAfter(peer) {
            return Self.tooManyFailures(retryAfter: wait)
        }
        switch credentials.check(authorization: authorization, needs: right) {
        case .granted(let user):
            request.context?.user = user
            return nil
        case .unauthenticated:
            if let authorization {
                // A wrong name or secret (never the secret itself in the log), limited per address.
                let name = Credentials.basic(authorization)?.0
                request.context?.user = name
                let limited = credentials.failures.failed(peer)
                Log.info("authentication failed", ["user": "\(name ?? "-")", "peer": "\(peer)"])
                if limited { Log.warning("\(peer): failed logins over the limit; answering 429 until it waits") }
            }
            var answer = HTTPResponse.text(401, "credentials needed: HTTP Basic (curl -u NAME:SECRET)")
            answer.headers.set("WWW-Authenticate", "Basic realm=\"kalavara\"")
            return answer
        case .forbidden(let user):
            request.context?.user = user
            return .text(403, "\(user) lacks the '\(right.rawValue)' right")
        }
    }
}

extension AccessGate {
    /// Loads `--secret-file` and `--auth-file` (either may be absent); a problem with
    /// either is a start-up error. The credentials are re-read on `SIGHUP`.
    convenience init(configuration secretFile: String?, authFile: String?) throws {
        let secret = try secretFile.map { try ClusterSecret(file: $0) }
        let credentials = try authFile.map { try Credentials(file: $0) }
        self.init(secret: secret, credentials: credentials)
        credentials?.reloadOnHangup()
    }

    /// The start-up line that says how this daemon is secured (one warning when open).
    func announce() {
        switch (secret != nil, credentials) {
        case (false, nil):
            Log.warning("no --secret-file: this daemon runs open (anyone who can reach it can read, write and change the cluster); see docs/security.md")
        case (false, let credentials?):
            Log.warning("no --secret-file: clients need credentials (\(credentials.count) user(s)), but calls between daemons are not signed; see docs/security.md")
        case (true, nil):
            Log.info("signed cluster: tickets and calls between daemons are signed; clients need no credentials")
        case (true, let credentials?):
            Log.info("signed cluster; clients need credentials (\(credentials.count) user(s))")
        }
    }
}

extension Credentials {
    /// Re-reads the file on every `SIGHUP`, keeping the credentials in force on a problem.
    public func reloadOnHangup() {
        Hangup.onSignal { [self] in
            do {
                try reload()
                Log.info("SIGHUP: re-read \(path): \(count) user(s)")
            } catch {
                Log.error("SIGHUP: kept the credentials in force: \(error)")
            }
        }
    }
}

/// `SIGHUP`, delivered through Dispatch like the shutdown signals: one signal source, which
/// runs every handler registered (a second source for the same signal was not reliably
/// delivered to: the credentials' reload stopped when the TLS one was added).
enum Hangup {
    private static let handlers = Mutex<[@Sendable () -> Void]>([])
    private struct Kept: @unchecked Sendable { let source: any DispatchSourceSignal }
    private static let source: Kept = {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "sighup"))
        source.setEventHandler { for handler in handlers.withLock({ $0 }) { handler() } }
        source.resume()
        return Kept(source: source)
    }()

    static func onSignal(_ handler: @escaping @Sendable () -> Void) {
        handlers.withLock { $0.append(handler) }
        _ = source
    }
}
