/// Who a request turned out to be, known only once a handler has checked its credentials:
/// the access log and the authentication limiter read it after the handler returns.
///
/// A class, so a handler that receives the request by value can still attach the user it
/// identified. One per connection, not per request: the connection clears it as it parses
/// each head, so a request costs no allocation and no lock for it.
///
/// Sendable by hand: like its connection, it belongs to one thread at a time (the event
/// loop, or the worker serving the request), handed over with the connection.
public final class RequestContext: @unchecked Sendable {
    /// The user the request authenticated as (the master's Basic user, the gateway's S3
    /// access key), or the name it claimed when its credentials were refused.
    public var user: String?

    init() {}
}
