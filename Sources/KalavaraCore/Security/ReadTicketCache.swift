import Foundation

/// Signed read tickets for the keys being read now. A GET redirect's ticket depends only
/// on the key, the version and the expiry; with the expiry rounded up to `granularity`
/// seconds (30, or a quarter of a shorter lifetime), every read of a key within that time carries the same ticket, so the master
/// signs it once instead of computing an HMAC on every redirect. A miss (a key not read in
/// the last `granularity` seconds, or a slot another key took) just signs.
///
/// A fixed table of slots in striped locks: no growth, no eviction policy to run.
final class ReadTicketCache: @unchecked Sendable {
    let granularity: Double
    private static let stripeCount = 64
    private static let slotsPerStripe = 256

    private struct Entry {
        let key: [UInt8]
        let version: UInt64
        let expires: UInt64
        let query: String
    }

    private final class Stripe: @unchecked Sendable {
        let lock = NSLock()
        var slots = [Entry?](repeating: nil, count: ReadTicketCache.slotsPerStripe)
    }

    private let stripes = (0..<stripeCount).map { _ in Stripe() }
    private let secret: ClusterSecret
    private let lifetime: Double

    init(secret: ClusterSecret, lifetime: Double) {
        self.secret = secret
        self.lifetime = lifetime
        granularity = min(30, lifetime / 4)
    }

    /// The expiry every ticket issued at `now` gets: `lifetime` to `lifetime + granularity` away.
    func expiry(at now: Double) -> UInt64 {
        UInt64(((now / granularity).rounded(.down) + 1) * granularity + lifetime)
    }

    /// The query string of a signed read ticket for this version of the key.
    func query(_ key: Key, version: UInt64, now: Double = Date().timeIntervalSince1970) -> String {
        let expires = expiry(at: now)
        var hasher = Hasher()
        key.bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        hasher.combine(version)
        let hash = UInt(bitPattern: hasher.finalize())
        let stripe = stripes[Int(hash % UInt(Self.stripeCount))]
        let slot = Int((hash / UInt(Self.stripeCount)) % UInt(Self.slotsPerStripe))
        stripe.lock.lock()
        if let entry = stripe.slots[slot], entry.version == version, entry.expires == expires, entry.key == key.bytes {
            stripe.lock.unlock()
            return entry.query
        }
        stripe.lock.unlock()
        let query = PlacementTicket(version: version, expires: expires).signed(for: .read, key, secret: secret).query
        stripe.lock.lock()
        stripe.slots[slot] = Entry(key: key.bytes, version: version, expires: expires, query: query)
        stripe.lock.unlock()
        return query
    }
}
