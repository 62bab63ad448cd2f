import Foundation
import KalavaraHTTP
import Synchronization

/// A client of etcd's v3 API through its JSON gateway (plain HTTP on the client port, etcd
/// 3.4's `/v3/...` paths), on the project's own blocking `HTTPClient`: the masters keep their
/// group's leader election, lease and in-sync set in etcd, and a gRPC stack for a dozen small
/// calls a second would weigh more than all of this.
///
/// Every call is bounded by `timeout` as a whole, failover included, because a leader must
/// know in time whether it still holds its lease. It goes first to the endpoint that answered
/// last; when that one cannot be reached, breaks the exchange, or answers 5xx (etcd's gateway
/// says 503 for "no leader" and "request timed out"), the call moves on to the next, in the
/// order given, and throws `.unreachable` only when none answered. A 4xx answer is etcd's
/// verdict and is not tried elsewhere.
///
/// A call that timed out may still have been applied where it was sent, so a failover can
/// repeat it: harmless for a put, a delete or a keepalive, an orphan lease for a grant (it
/// expires), and for a transaction the repeat sees the first one's effect (a create-if-absent
/// then finds the key present, under the caller's own lease).
public final class Etcd: Sendable {
    public let endpoints: [HTTPURL]
    /// Seconds a call may take, over all the endpoints it tries.
    public let timeout: Double
    /// Keeps a connection to each endpoint, for the first attempt of a call (keepalives
    /// every second would otherwise each pay a handshake).
    let pooledClient: HTTPClient
    /// Index into `endpoints` of the one that answered last.
    private let preferred = Mutex(0)

    var preferredEndpoint: Int {
        get { preferred.withLock { $0 } }
        set { preferred.withLock { $0 = newValue } }
    }

    public init(endpoints: [HTTPURL], timeout: Double = 2) {
        self.endpoints = endpoints
        self.timeout = timeout
        pooledClient = HTTPClient(timeout: timeout, maxIdlePerHost: 2)
    }

    /// A key's value and its bookkeeping, as etcd keeps it.
    public struct Entry: Sendable, Equatable {
        public let key: String
        public let value: [UInt8]
        /// The revision that created the key (0 in a comparison: the key is absent).
        public let createRevision: Int64
        /// The revision of its last change.
        public let modRevision: Int64
        /// The lease it lives under, 0 for none.
        public let lease: Int64

        public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, lease: Int64) {
            self.key = key
            self.value = value
            self.createRevision = createRevision
            self.modRevision = modRevision
            self.lease = lease
        }
    }

    /// A transaction's condition on one key. An absent key has value empty and revisions and lease 0.
    public enum Compare: Sendable {
        case value(String, equals: [UInt8])
        case createRevision(String, equals: Int64)
        case modRevision(String, equals: Int64)
        case lease(String, equals: Int64)
    }

    /// One step of a transaction's branch.
    public enum Operation: Sendable {
        case put(String, [UInt8], lease: Int64?)
        case delete(String)
        /// Reads a key; its entry (or nil) is among the transaction's `gets`.
        case get(String)

        var name: String {
            switch self {
            case .put: "put"
            case .delete: "delete"
            case .get: "get"
            }
        }
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// No endpoint answered in time (each one's failure, in the order tried).
        case unreachable(String)
        /// etcd no longer knows the lease: it expired or was revoked, and its keys are gone.
        case leaseExpired
        /// etcd answered with an error status (its gateway maps gRPC codes: 400 invalid
        /// argument, 404 not found, ...).
        case refused(status: Int, message: String)
        /// An answer that is not what etcd's gateway sends.
        case malformed(String)

        public var description: String {
            switch self {
            case .unreachable(let reason): return "etcd unreachable: \(reason)"
            case .leaseExpired: return "etcd lease expired"
            case .refused(let status, let message): return "etcd refused (\(status)): \(message)"
            case .malformed(let reason): return "malformed etcd answer: \(reason)"
            }
        }
    }

    // MARK: Leases

    /// Grants a lease of `seconds`; returns its ID.
    public func grantLease(ttl seconds: Int) throws -> Int64 {
        let answer = try call("/v3/lease/grant", ["TTL": seconds], as: EtcdWire.LeaseGrant.self)
        if let error = answer.error, !error.isEmpty { throw Failure.refused(status: 200, message: error) }
        guard answer.id.value != 0 else { throw Failure.malformed("lease grant answer: lease ID 0") }
        return answer.id.value
    }

    /// Renews `lease` to its full TTL; returns that TTL in seconds. Throws `.leaseExpired`
    /// when etcd no longer knows the lease.
    public func keepAlive(_ lease: Int64) throws -> Int {
        let answer = try call("/v3/lease/keepalive", ["ID": String(lease)], as: EtcdWire.KeepAliveStream.self)
        guard let result = answer.result else { throw Failure.malformed("keepalive answer: no result") }
        guard result.seconds > 0 else { throw Failure.leaseExpired }
        return Int(result.seconds)
    }

    /// The whole seconds `lease` has left without a keepalive (0: under one); nil when etcd
    /// no longer knows it (etcd says -1).
    public func timeToLive(_ lease: Int64) throws -> Int? {
        let answer = try call("/v3/lease/timetolive", ["ID": String(lease)], as: EtcdWire.LeaseTTL.self)
        return answer.seconds >= 0 ? Int(answer.seconds) : nil
    }

    /// Ends `lease` now, deleting its keys. A lease etcd no longer knows is gone already:
    /// not an error.
    public func revoke(_ lease: Int64) throws {
        do {
            _ = try call("/v3/lease/revoke", ["ID": String(lease)], as: EtcdWire.Present.self)
        } catch Failure.refused(404, let message) where message.contains("lease not found") {
            return
        }
    }

    // MARK: Keys

    public func get(_ key: String) throws -> Entry? {
        try call("/v3/kv/range", ["key": EtcdWire.base64(key)], as: EtcdWire.Range.self).single
    }

    /// Every key starting with `prefix`, in key order.
    public func list(prefix: String) throws -> [Entry] {
        let start = prefix.isEmpty ? EtcdWire.base64([0]) : EtcdWire.base64(prefix)
        let request = ["key": start, "range_end": EtcdWire.base64(EtcdWire.rangeEnd(prefix: prefix))]
        return try call("/v3/kv/range", request, as: EtcdWire.Range.self).entries
    }

    /// Sets `key` to `value`; under `lease`, the key goes when the lease does.
    public func put(_ key: String, _ value: [UInt8], lease: Int64? = nil) throws {
        _ = try call("/v3/kv/put", Self.putRequest(key, value, lease: lease), as: EtcdWire.Present.self)
    }

    public func delete(_ key: String) throws {
        _ = try call("/v3/kv/deleterange", ["key": EtcdWire.base64(key)], as: EtcdWire.Present.self)
    }

    /// Runs `then` if every comparison holds, else `else`, atomically. Returns which branch
    /// ran and, for each `.get` in it, in order, the entry read (nil: no such key).
    public func transaction(if compares: [Compare], then: [Operation], else otherwise: [Operation] = []) throws
        -> (succeeded: Bool, gets: [Entry?]) {
        let request: [String: Any] = [
            "compare": compares.map(Self.compareRequest),
            "success": then.map(Self.operationRequest),
            "failure": otherwise.map(Self.operationRequest),
        ]
        return try call("/v3/kv/txn", request, as: EtcdWire.Txn.self).outcome(then: then, else: otherwise)
    }

    static func putRequest(_ key: String, _ value: [UInt8], lease: Int64?) -> [String: Any] {
        var request = ["key": EtcdWire.base64(key), "value": EtcdWire.base64(value)]
        if let lease { request["lease"] = String(lease) }
        return request
    }

    static func compareRequest(_ compare: Compare) -> [String: Any] {
        let (key, target, field, operand): (String, String, String, String) = switch compare {
        case .value(let key, let value): (key, "VALUE", "value", EtcdWire.base64(value))
        case .createRevision(let key, let revision): (key, "CREATE", "create_revision", String(revision))
        case .modRevision(let key, let revision): (key, "MOD", "mod_revision", String(revision))
        case .lease(let key, let lease): (key, "LEASE", "lease", String(lease))
        }
        return ["key": EtcdWire.base64(key), "target": target, "result": "EQUAL", field: operand]
    }

    static func operationRequest(_ operation: Operation) -> [String: Any] {
        switch operation {
        case .put(let key, let value, let lease): ["request_put": putRequest(key, value, lease: lease)]
        case .delete(let key): ["request_delete_range": ["key": EtcdWire.base64(key)]]
        case .get(let key): ["request_range": ["key": EtcdWire.base64(key)]]
        }
    }
}
