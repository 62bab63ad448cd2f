/// An `http://host:port/path?query` URL, as daemons exchange them (volume base URLs,
/// redirect targets). Only plain HTTP: the store runs inside a trusted network.
public struct HTTPURL: Hashable, CustomStringConvertible, Sendable {
    let host: String
    public let port: Int
    /// Path and query, starting with "/".
    public let pathAndQuery: String

    public init?(_ text: String) {
        guard text.hasPrefix("http://") else { return nil }
        let rest = text.dropFirst("http://".count)
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if path.hasPrefix("?") { path = "/" + path }
        pathAndQuery = path.isEmpty ? "/" : path
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        if authority.hasPrefix("[") { // IPv6 literal
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.isEmpty { port = 80 } else {
                guard after.hasPrefix(":"), let value = Int(after.dropFirst()), (1...65535).contains(value) else { return nil }
                port = value
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let value = Int(authority[authority.index(after: colon)...]), (1...65535).contains(value) else { return nil }
            port = value
        } else {
            host = String(authority)
            port = 80
        }
        let allowed = host.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || $0.properties.numericType != nil)) || "-._:".unicodeScalars.contains($0)
        }
        guard !host.isEmpty, allowed else { return nil }
    }

    /// "host:port", bracketed for IPv6: what a Host header and a pool key need.
    public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public var description: String { "http://\(authority)\(pathAndQuery == "/" ? "" : pathAndQuery)" }
}
