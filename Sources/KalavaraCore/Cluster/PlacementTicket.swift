import Foundation
import KalavaraHTTP
import KalavaraSupport

/// What the master tells a volume in a redirect's query string: which version this write
/// or read is, where to commit it, and which volumes hold or will hold it.
///
/// Versioned (`t=1`) so fields can be added without confusing older volumes; the volume
/// validates every field, and in a signed cluster acts on none before the signature
/// (`verified`) says the master issued it for this operation on this key.
public struct PlacementTicket: Equatable, Sendable {
    static let currentFormat = "1"

    public var version: UInt64
    /// The master's base URL, for the commit.
    var master: String?
    /// The volumes of the placement, as the master knows them; the first is the volume the
    /// client was sent to.
    var holders: [String]
    /// The write's request id (see `RequestID`), for the logs; writes only.
    var requestID: String?
    /// Signed clusters: when the ticket stops being valid (Unix seconds).
    var expires: UInt64?
    /// The body length the client announced to the master (`Content-Length`), or -1 for
    /// "not empty" (a chunked body whose first chunk the master saw): a client that
    /// follows the redirect without resending its body is refused instead of storing an
    /// empty value. PUT tickets only.
    var length: Int?
    /// Signed clusters: HMAC-SHA256 (hex) over what the ticket grants (see `signedText`).
    var signature: String?

    init(version: UInt64, master: String? = nil, holders: [String] = [], requestID: String? = nil,
                expires: UInt64? = nil, length: Int? = nil) {
        self.version = version
        self.master = master
        self.holders = holders
        self.requestID = requestID
        self.expires = expires
        self.length = length
    }

    /// What a ticket lets its bearer do on a volume.
    enum Operation: String, Sendable {
        /// GET or HEAD.
        case read
        case put
        case delete

        init?(method: String) {
            switch method {
            case "GET", "HEAD": self = .read
            case "PUT": self = .put
            case "DELETE": self = .delete
            default: return nil
            }
        }
    }

    /// The bytes the signature covers: the operation, the key (its raw bytes, after their
    /// count), and every field. Built as bytes: this runs on every redirect and read.
    func signedText(_ operation: Operation, _ key: Key) -> [UInt8] {
        var text: [UInt8] = []
        text.reserveCapacity(96 + key.bytes.count + (master?.utf8.count ?? 0) + holders.reduce(0) { $0 + $1.utf8.count + 1 })
        func line<S: StringProtocol>(_ field: S) {
            text.append(contentsOf: field.utf8)
            text.append(0x0A)
        }
        line("KALAVARA-TICKET-1")
        line(operation.rawValue)
        line(String(key.bytes.count))
        text.append(contentsOf: key.bytes)
        text.append(0x0A)
        line(String(version))
        line(master ?? "")
        for (index, holder) in holders.enumerated() {
            if index > 0 { text.append(UInt8(ascii: ",")) }
            text.append(contentsOf: holder.utf8)
        }
        text.append(0x0A)
        line(requestID ?? "")
        line(expires.map(String.init) ?? "")
        text.append(contentsOf: (length.map(String.init) ?? "").utf8)
        return text
    }

    /// This ticket, signed for one operation on one key.
    func signed(for operation: Operation, _ key: Key, secret: ClusterSecret) -> PlacementTicket {
        var ticket = self
        ticket.signature = secret.sign(signedText(operation, key))
        return ticket
    }

    /// In a signed cluster, a ticket must be signed for exactly this operation on this key
    /// and still valid; otherwise `403`. The volume acts on no field of a ticket before this.
    static func verified(_ ticket: PlacementTicket?, for operation: Operation, _ key: Key, secret: ClusterSecret?,
                                now: Double = Date().timeIntervalSince1970) throws -> PlacementTicket? {
        guard let secret else { return ticket }
        guard let ticket, let signature = ticket.signature else {
            throw HTTPError(403, "this cluster is signed: go through the master, whose redirect carries a signed ticket")
        }
        let text = ticket.signedText(operation, key)
        let valid = operation == .read ? secret.verifyRemembering(signature, of: text) : secret.verify(signature, of: text)
        guard let expires = ticket.expires, valid else {
            throw HTTPError(403, "the ticket's signature is not valid for this \(operation.rawValue) of this key")
        }
        guard Double(expires) >= now else { throw HTTPError(403, "the ticket has expired: ask the master again") }
        return ticket
    }

    /// Where in a ticket's holders a volume must be to act on it.
    enum Addressee: Sendable {
        /// A client's PUT or DELETE: the volume the master sent the client to.
        case first
        /// A write's copy, forwarded by the first holder.
        case replica
        /// A read: any holder the ticket names.
        case holder
    }

    /// Whether this ticket is meant for the volume known as `me` (a normalized base URL) in
    /// the role `addressee`. A ticket acted on elsewhere would make the disks differ from
    /// the holders the master records. A ticket that names no holders (a read's, a repair
    /// copy's) is bound to a key and version, not to a volume.
    func addresses(_ me: String, as addressee: Addressee) -> Bool {
        guard !holders.isEmpty else { return true }
        let named = holders.map { VolumeRegistry.normalize($0) ?? $0 }
        switch addressee {
        case .first: return named[0] == me
        case .replica: return named.dropFirst().contains(me)
        case .holder: return named.contains(me)
        }
    }

    var query: String {
        // A read's ticket names only the version: built directly, it is on the hot path.
        if master == nil, holders.isEmpty, length == nil {
            guard let signature, let expires else { return "t=\(Self.currentFormat)&ver=\(version)" }
            return "t=\(Self.currentFormat)&ver=\(version)&x=\(expires)&sig=\(signature)"
        }
        var parameters = QueryParameters()
        parameters.add("t", Self.currentFormat)
        parameters.add("ver", String(version))
        if let master { parameters.add("m", master) }
        if !holders.isEmpty { parameters.add("h", holders.joined(separator: ",")) }
        if let requestID { parameters.add("rid", requestID) }
        if let length { parameters.add("n", String(length)) }
        if let expires { parameters.add("x", String(expires)) }
        if let signature { parameters.add("sig", signature) }
        return parameters.encoded
    }

    /// The ticket a master's redirect carries in its `Location` (a 307 to write, a 302 to
    /// read); nil when there is none or it is malformed. For clients of the cluster, such as
    /// the S3 gateway, which need the version they were issued.
    public init?(redirectedTo location: HTTPURL) {
        let query = location.pathAndQuery.split(separator: "?", maxSplits: 1).dropFirst().first
        guard let parameters = try? QueryParameters(query), let ticket = try? PlacementTicket(parameters) else { return nil }
        self = ticket
    }

    /// Reads a ticket from a request's query (`QueryView` on a request's hot path). Nil if
    /// there is none; 400 if it is malformed.
    public init?<Query: QueryLookup>(_ parameters: Query) throws {
        guard let format = parameters["t"] else { return nil }
        guard format == Self.currentFormat else { throw HTTPError(400, "unknown placement ticket format \(format)") }
        guard let text = parameters["ver"], let version = UInt64(text), version > 0 else {
            throw HTTPError(400, "placement ticket without a valid version")
        }
        self.version = version
        if let master = parameters["m"] {
            guard HTTPURL(master) != nil else { throw HTTPError(400, "placement ticket names a bad master URL") }
            self.master = master
        }
        holders = (parameters["h"] ?? "").split(separator: ",").map(String.init)
        guard holders.allSatisfy({ HTTPURL($0) != nil }) else {
            throw HTTPError(400, "placement ticket names a bad volume URL")
        }
        if let requestID = parameters["rid"] {
            guard RequestID.isValid(requestID) else { throw HTTPError(400, "placement ticket has a bad request id") }
            self.requestID = requestID
        }
        if let text = parameters["n"] {
            guard let value = Int(text), value >= -1 else { throw HTTPError(400, "placement ticket has a bad length") }
            length = value
        }
        if let text = parameters["x"] {
            guard let value = UInt64(text) else { throw HTTPError(400, "placement ticket has a bad expiry") }
            expires = value
        }
        signature = parameters["sig"]
    }

    /// A PUT's body must be the one the client announced to the master: a client that
    /// followed the redirect without resending it (a spent generator) would store a
    /// different value. Checked against the framing before any byte is read, and against
    /// the count received for a chunked body.
    func checkBodyLength(_ framing: BodyFraming) throws {
        guard let length else { return }
        switch framing {
        case .none, .length:
            let announced = framing.declaredLength ?? 0
            if length == -1 ? announced == 0 : announced != length { throw Self.wrongBody(length, announced) }
        case .chunked, .untilClose:
            break // counted as it arrives (checkReceived)
        }
    }

    func checkReceived(_ count: Int) throws {
        guard let length else { return }
        if length == -1 ? count == 0 : count != length { throw Self.wrongBody(length, count) }
    }

    private static func wrongBody(_ expected: Int, _ got: Int) -> HTTPError {
        HTTPError(400, "the client did not resend the body it announced to the master ("
                  + (expected == -1 ? "a non-empty body" : "\(expected) bytes") + ", got \(got)): "
                  + "follow the redirect with the same body", closesConnection: true)
    }
}
