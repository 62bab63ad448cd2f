import Foundation
import KalavaraSupport
import Synchronization

/// What a client may do.
public enum Right: String, Sendable, CaseIterable {
    /// GET/HEAD of keys and listings.
    case read
    /// PUT and DELETE.
    case write
    /// `/admin/`.
    case admin
}

/// Client credentials from `--auth-file`: one `NAME SECRET RIGHTS` line each (RIGHTS a
/// comma list of `read`, `write`, `admin`; `#` starts a comment). Re-read on `SIGHUP`
/// (`reload`); a file that no longer parses keeps the table in force and logs why.
///
/// Secrets are kept only as SHA-256 digests and compared in constant time; a name that is
/// not in the table is compared against a dummy digest, so a wrong name costs the same as
/// a wrong secret.
public final class Credentials: Sendable {
    struct Entry: Sendable, Equatable {
        let secretDigest: [UInt8]
        let rights: Set<Right>
        /// The secret itself, kept only by the S3 gateway: Signature V4 derives its key from it.
        var secret: String?
    }

    let path: String
    /// Failed logins against this table, per client address: the master's Basic auth and
    /// the gateway's signatures are limited alike.
    public let failures = AuthFailureLimiter()
    private let table: Mutex<[String: Entry]>
    private let keepsSecrets: Bool
    private static let dummy = SHA256.digest(Array("kalavara: no such user".utf8))

    /// `keepingSecrets`: hold the secrets themselves (the S3 gateway), not only their digests.
    public init(file path: String, keepingSecrets: Bool = false) throws {
        self.path = path
        self.keepsSecrets = keepingSecrets
        table = Mutex(try Self.load(path, keepingSecrets: keepingSecrets))
    }

    /// For Signature V4: the secret and rights of an access key, nil for an unknown one.
    public func secretKey(of name: String) -> (secret: String, rights: Set<Right>)? {
        table.withLock { $0[name] }.flatMap { entry in entry.secret.map { ($0, entry.rights) } }
    }

    /// The users the table holds now.
    var count: Int { table.withLock { $0.count } }

    /// Re-reads the file. On a problem the old table stays and the error says why.
    func reload() throws {
        let fresh = try Self.load(path, keepingSecrets: keepsSecrets)
        table.withLock { $0 = fresh }
    }

    static func load(_ path: String, keepingSecrets: Bool = false) throws -> [String: Entry] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read the auth file \(path)")
        }
        return try parse(String(decoding: data, as: UTF8.self), source: path, keepingSecrets: keepingSecrets)
    }

    static func parse(_ text: String, source: String, keepingSecrets: Bool = false) throws -> [String: Entry] {
        var entries: [String: Entry] = [:]
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            let place = "\(source) line \(number + 1)"
            guard fields.count == 3 else {
                throw ConfigurationError("\(place): want NAME SECRET RIGHTS (secret not shown)")
            }
            let name = String(fields[0])
            guard !name.contains(":") else { throw ConfigurationError("\(place): a name cannot contain ':'") }
            var rights: Set<Right> = []
            for word in fields[2].split(separator: ",") {
                guard let right = Right(rawValue: String(word)) else {
                    throw ConfigurationError("\(place): unknown right '\(word.prefix(20))' (read, write, admin)")
                }
                rights.insert(right)
            }
            guard entries[name] == nil else { throw ConfigurationError("\(place): \(name) appears twice") }
            entries[name] = Entry(secretDigest: SHA256.digest(Array(fields[1].utf8)), rights: rights,
                                  secret: keepingSecrets ? String(fields[1]) : nil)
        }
        return entries
    }

    enum Outcome: Equatable, Sendable {
        case granted(user: String)
        /// No credentials, unreadable ones, or a wrong name or secret: `401`.
        case unauthenticated
        /// Known user without the right: `403`.
        case forbidden(user: String)
    }

    /// Checks an `Authorization` header (HTTP Basic) for a right.
    func check(authorization: String?, needs right: Right) -> Outcome {
        guard let authorization, let (name, secret) = Self.basic(authorization) else { return .unauthenticated }
        let entry = table.withLock { $0[name] }
        let given = SHA256.digest(Array(secret.utf8))
        let matches = HMACSHA256.equal(given, entry?.secretDigest ?? Self.dummy)
        guard let entry, matches else { return .unauthenticated }
        return entry.rights.contains(right) ? .granted(user: name) : .forbidden(user: name)
    }

    /// `Basic base64(name:secret)` → (name, secret).
    static func basic(_ header: String) -> (String, String)? {
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic",
              let data = Data(base64Encoded: String(parts[1]).trimmingCharacters(in: .whitespaces)) else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        guard let colon = text.firstIndex(of: ":") else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }
}
