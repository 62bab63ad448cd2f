import Foundation
import KalavaraSupport

/// The secret every daemon of a signed cluster shares (`--secret-file`): the key of every
/// HMAC-SHA256 signature on tickets, calls between daemons and health answers.
///
/// It never appears in a log line, an error message or an answer: `description` hides it,
/// and comparisons of codes made with it run in constant time.
public struct ClusterSecret: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    private let mac: KeyedHMACSHA256
    /// Tickets verified lately (see `verifyRemembering`).
    private let recent = RecentCodes()

    /// At least this many bytes: a short secret can be guessed offline from one signature.
    static let minimumBytes = 16

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
    func sign(_ message: String) -> String { sign(Array(message.utf8)) }

    func sign(_ message: [UInt8]) -> String { Hex.encode(mac.authenticationCode(message)) }

    /// Whether `signature` (hex) is the secret's code for `message`, compared in constant time.
    func verify<Text: StringProtocol>(_ signature: Text, of message: String) -> Bool {
        verify(signature, of: Array(message.utf8))
    }

    func verify<Text: StringProtocol>(_ signature: Text, of message: [UInt8]) -> Bool {
        guard let given = Hex.decode(signature), given.count == SHA256.byteCount else { return false }
        return HMACSHA256.equal(given, mac.authenticationCode(message))
    }

    /// `verify`, remembering the codes that checked out: a read ticket is presented many
    /// times (every GET of a hot key within its period carries the same one), and the same
    /// signature over the same text is valid again without another HMAC. Only codes that
    /// verified are remembered, so nothing can be slipped in; callers still check expiry.
    func verifyRemembering(_ signature: String, of message: [UInt8]) -> Bool {
        if recent.contains(signature, message) { return true }
        guard verify(signature, of: message) else { return false }
        recent.insert(signature, message)
        return true
    }
}

/// A start-up configuration problem, reported in one line (exit 2).
struct ConfigurationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A fixed table of recently verified (signature, text) pairs in striped locks.
final class RecentCodes: @unchecked Sendable {
    private static let stripeCount = 64, slotsPerStripe = 256

    private final class Stripe: @unchecked Sendable {
        let lock = NSLock()
        var slots = [(signature: String, message: [UInt8])?](repeating: nil, count: RecentCodes.slotsPerStripe)
    }

    private let stripes = (0..<stripeCount).map { _ in Stripe() }

    private func place(_ signature: String) -> (Stripe, Int) {
        var hasher = Hasher()
        hasher.combine(signature)
        let hash = UInt(bitPattern: hasher.finalize())
        return (stripes[Int(hash % UInt(Self.stripeCount))], Int((hash / UInt(Self.stripeCount)) % UInt(Self.slotsPerStripe)))
    }

    func contains(_ signature: String, _ message: [UInt8]) -> Bool {
        let (stripe, slot) = place(signature)
        stripe.lock.lock()
        defer { stripe.lock.unlock() }
        guard let entry = stripe.slots[slot] else { return false }
        return entry.signature == signature && entry.message == message
    }

    func insert(_ signature: String, _ message: [UInt8]) {
        let (stripe, slot) = place(signature)
        stripe.lock.lock()
        stripe.slots[slot] = (signature, message)
        stripe.lock.unlock()
    }
}
