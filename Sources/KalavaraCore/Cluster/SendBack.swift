import KalavaraHTTP

/// A volume sending a reader back to the master: the read's ticket names a version the
/// volume no longer holds (overwritten, or moved by healing). The master's URL for the key
/// carries `not=` naming that volume, so the master picks another holder. The shape of that
/// URL is known here only: the volume makes it, the master and the gateway read it.
public enum SendBack {
    /// The query parameter that names the volume the reader comes back from.
    static let parameter = "not"

    /// Where the volume the master knows as `volume` sends a reader of `key` back to.
    static func location(master: String, key: Key, from volume: String) -> String {
        var query = QueryParameters()
        query.add(parameter, volume)
        return "\(master)/store/\(key.pathComponent)?\(query.encoded)"
    }

    /// The volume a read comes back from, out of the query of a `GET /store/KEY` on the
    /// master; nil for a read that did not come back.
    static func volume(inQuery query: Substring?) throws -> String? {
        guard let query, !query.isEmpty else { return nil }
        return try QueryParameters(query)[parameter]
    }

    /// The volume that sends a reader back with this redirect; nil when `location` is no
    /// send-back (a read sent on to another volume).
    public static func volume(in location: HTTPURL) -> String? {
        let target = location.pathAndQuery
        guard target.hasPrefix("/store/"), let mark = target.firstIndex(of: "?") else { return nil }
        return (try? volume(inQuery: target[target.index(after: mark)...])) ?? nil
    }
}
