import Foundation

/// An `http://host:port/path?query` or `https://…` URL, as daemons exchange them (volume
/// base URLs, redirect targets).
public struct HTTPURL: Hashable, CustomStringConvertible, Sendable {
    /// `https`: the connection speaks TLS and the server's certificate is verified.
    public let isSecure: Bool
    let host: String
    public let port: Int
    /// Path and query, starting with "/".
    public let pathAndQuery: String

    public init?(_ text: String) {
        if text.hasPrefix("https://") {
            isSecure = true
        } else if text.hasPrefix("http://") {
            isSecure = false
        } else {
            return nil
        }
        let rest = text.dropFirst(isSecure ? "https://".count : "http://".count)
        let defaultPort = isSecure ? 443 : 80
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
            if after.isEmpty { port = defaultPort } else {
                guard after.hasPrefix(":"), let value = Int(after.dropFirst()), (1...65535).contains(value) else { return nil }
                port = value
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let value = Int(authority[authority.index(after: colon)...]), (1...65535).contains(value) else { return nil }
            port = value
        } else {
            host = String(authority)
            port = defaultPort
        }
        let allowed = host.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || $0.properties.numericType != nil)) || "-._:".unicodeScalars.contains($0)
        }
        guard !host.isEmpty, allowed else { return nil }
    }

    /// "host:port", bracketed for IPv6: what a Host header and a pool key need.
    public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// "http://host:port" or "https://host:port": a daemon's base URL.
    public var origin: String { "\(isSecure ? "https" : "http")://\(authority)" }

    public var description: String { origin + (pathAndQuery == "/" ? "" : pathAndQuery) }

    /// Whether `host` is an IP address rather than a name (a certificate names it as such).
    static func isAddressLiteral(_ host: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}
