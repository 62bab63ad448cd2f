import Foundation

/// The secret every daemon of a signed cluster shares (`--secret-file`): the key of every
/// HMAC-SHA256 signature on tickets, calls between daemons and health answers.
///
/// It never appears in a log line, an error message or an answer: `description` hides it,
/// and comparisons of codes made with it run in constant time.
public struct ClusterSecret: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    private let mac: KeyedHMACSHA256

    /// At least this many bytes: a short secret can be guessed offline from one signature.
    public static let minimumBytes = 16

    public init(bytes: [UInt8]) throws {
        guard bytes.count >= Self.minimumBytes else {
            throw ConfigurationError("the cluster secret must be at least \(Self.minimumBytes) bytes")
        }
        mac = KeyedHMACSHA256(key: bytes)
    }

    /// Reads the secret file: its bytes, as they are (every daemon reads the same file).
    public init(file path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read the secret file \(path)")
        }
        do {
            try self.init(bytes: Array(data))
        } catch {
            throw ConfigurationError("the secret file \(path) is too short: it needs at least \(Self.minimumBytes) bytes")
        }
    }

    public var description: String { "<cluster secret>" }
    public var debugDescription: String { description }

    /// The HMAC-SHA256 of `message` under the secret, as lower-case hex.
    public func sign(_ message: String) -> String { sign(Array(message.utf8)) }

    public func sign(_ message: [UInt8]) -> String { Hex.encode(mac.authenticationCode(message)) }

    /// Whether `signature` (hex) is the secret's code for `message`, compared in constant time.
    public func verify<Text: StringProtocol>(_ signature: Text, of message: String) -> Bool {
        verify(signature, of: Array(message.utf8))
    }

    public func verify<Text: StringProtocol>(_ signature: Text, of message: [UInt8]) -> Bool {
        guard let given = Hex.decode(signature), given.count == SHA256.byteCount else { return false }
        return HMACSHA256.equal(given, mac.authenticationCode(message))
    }
}

/// A start-up configuration problem, reported in one line (exit 2).
public struct ConfigurationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
