/// What the master tells a volume in a redirect's query string: which version this write
/// or read is, where to commit it, and which volumes hold or will hold it.
///
/// Versioned (`t=1`) so later fields (a signature) can be added without confusing older
/// volumes; the volume treats it as opaque input and validates every field.
public struct PlacementTicket: Equatable, Sendable {
    static let currentFormat = "1"

    public var version: UInt64
    /// The master's base URL, for the commit.
    public var master: String?
    /// The volumes of the placement, as the master knows them; the first is the volume the
    /// client was sent to.
    public var holders: [String]
    /// The write's request id (see `RequestID`), for the logs; writes only.
    public var requestID: String?

    public init(version: UInt64, master: String? = nil, holders: [String] = [], requestID: String? = nil) {
        self.version = version
        self.master = master
        self.holders = holders
        self.requestID = requestID
    }

    public var query: String {
        // A read's ticket names only the version: built directly, it is on the hot path.
        if master == nil, holders.isEmpty { return "t=\(Self.currentFormat)&ver=\(version)" }
        var parameters = QueryParameters()
        parameters.add("t", Self.currentFormat)
        parameters.add("ver", String(version))
        if let master { parameters.add("m", master) }
        if !holders.isEmpty { parameters.add("h", holders.joined(separator: ",")) }
        if let requestID { parameters.add("rid", requestID) }
        return parameters.encoded
    }

    /// Reads a ticket from a request's query. Nil if there is none; 400 if it is malformed.
    public init?(_ parameters: QueryParameters) throws {
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
    }
}
