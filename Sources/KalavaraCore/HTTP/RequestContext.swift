import Synchronization

/// What the server and the handlers learn about one request beyond its head: the client's
/// address (known to the connection) and who it turned out to be (known only once a handler
/// has checked its credentials). The access log and the authentication limiter read it.
///
/// A class, so a handler that receives the request by value can still attach the user it
/// identified, and the connection sees it when it logs the answer.
public final class RequestContext: Sendable {
    private struct Fields {
        var peer = "-"
        var user: String?
    }
    private let fields = Mutex(Fields())

    public init() {}

    /// The client's IP address as text (`127.0.0.1`, `::1`), `-` when unknown.
    public var peer: String {
        get { fields.withLock { $0.peer } }
        set { fields.withLock { $0.peer = newValue } }
    }

    /// The user the request authenticated as (the master's Basic user, the gateway's S3
    /// access key), or the name it claimed when its credentials were refused.
    public var user: String? {
        get { fields.withLock { $0.user } }
        set { fields.withLock { $0.user = newValue } }
    }
}
