import Foundation
import KalavaraSupport
import Synchronization

/// Failed authentications per client address, as a token bucket: `burst` failures at once,
/// then one more every `1 / refillPerSecond` seconds. An address whose bucket is empty is
/// answered `429` (the S3 gateway: `503 SlowDown`) with `Retry-After`, without its
/// credentials being checked at all, so a guesser learns nothing more until it waits.
///
/// Why per address and not per user: a guesser tries many names, and locking a user out
/// would let anyone lock out a real user. Other addresses are never affected, and a
/// correct login from a limited address waits like a wrong one (it might be the guess that
/// came right). Before, Basic auth took ~12,900 guesses a second with nothing logged.
///
/// Memory is bounded: at most `capacity` addresses are tracked, in a ring of slots. A full
/// table evicts near a clock hand: of the next few slots, a refilled address (as good as
/// new) or else the one with the most tokens left (the least suspicious); constant work, so
/// a flood of failures from many addresses costs no more per failure than one.
///
/// Cheap for everyone else: `retryAfter` runs for every request with credentials (reads
/// answered on the event loop too), so while no address is tracked it is one atomic load,
/// and an address whose bucket has refilled is forgotten when next seen. IPv6 addresses
/// count by their /64, the block one host is usually given.
public final class AuthFailureLimiter: Sendable {
    let burst: Double
    let refillPerSecond: Double
    let capacity: Int
    private let now: @Sendable () -> Double

    private struct Bucket {
        var tokens: Double
        var updated: Double
        /// Its slot in `Table.ring`.
        var slot: Int
    }
    private struct Table {
        var buckets: [String: Bucket] = [:]
        /// Keys by slot; a slot is live while its key's bucket names it.
        var ring: [String] = []
        var hand = 0
    }
    private let table = Mutex(Table())
    /// `table.buckets.count`, readable without the lock.
    private let tracked = Atomic<Int>(0)
    /// Slots looked at for a victim when the table is full.
    private static let victimScan = 8

    init(burst: Int = 10, refillPerSecond: Double = 0.5, capacity: Int = 10_000,
                now: @escaping @Sendable () -> Double = { monotonicSeconds() }) {
        self.burst = Double(burst)
        self.refillPerSecond = refillPerSecond
        self.capacity = max(1, capacity)
        self.now = now
    }

    /// Whole seconds until `address` may try again, or nil if it may try now.
    public func retryAfter(_ address: String) -> Int? {
        guard tracked.load(ordering: .relaxed) > 0 else { return nil }
        let key = Self.key(address), time = now()
        return table.withLock { table in
            guard let bucket = table.buckets[key].map({ refilled($0, at: time) }) else { return nil }
            guard bucket.tokens < 1 else {
                if bucket.tokens >= burst { forget(key, in: &table) }
                return nil
            }
            return max(1, Int(((1 - bucket.tokens) / refillPerSecond).rounded(.up)))
        }
    }

    /// Records a failed attempt from `address`; returns true when this one emptied its
    /// bucket (the moment worth a warning).
    @discardableResult
    public func failed(_ address: String) -> Bool {
        let key = Self.key(address), time = now()
        return table.withLock { table in
            var bucket: Bucket
            if let known = table.buckets[key] {
                bucket = refilled(known, at: time)
            } else {
                bucket = Bucket(tokens: burst, updated: time, slot: freeSlot(&table, at: time))
                table.ring[bucket.slot] = key
                tracked.wrappingAdd(1, ordering: .relaxed)
            }
            bucket.tokens = max(0, bucket.tokens - 1)
            table.buckets[key] = bucket
            return bucket.tokens < 1
        }
    }

    /// Addresses tracked now.
    var count: Int { tracked.load(ordering: .relaxed) }

    /// What an address counts as: itself, or for IPv6 its /64.
    static func key(_ address: String) -> String {
        guard address.utf8.contains(UInt8(ascii: ":")) else { return address }
        var bytes = in6_addr()
        guard inet_pton(AF_INET6, address, &bytes) == 1 else { return address }
        let prefix = withUnsafeBytes(of: &bytes) { Array($0.prefix(8)) }
        return stride(from: 0, to: 8, by: 2).map { String(UInt16(prefix[$0]) << 8 | UInt16(prefix[$0 + 1]), radix: 16) }
            .joined(separator: ":") + "::/64"
    }

    private func refilled(_ bucket: Bucket, at time: Double) -> Bucket {
        Bucket(tokens: min(burst, bucket.tokens + (time - bucket.updated) * refillPerSecond), updated: time, slot: bucket.slot)
    }

    private func isLive(_ slot: Int, _ table: Table) -> Bool { table.buckets[table.ring[slot]]?.slot == slot }

    private func forget(_ key: String, in table: inout Table) {
        guard table.buckets.removeValue(forKey: key) != nil else { return }
        tracked.wrappingAdd(-1, ordering: .relaxed)
    }

    /// A slot for a new address: a new one while the ring is short, else a dead one or a
    /// victim's near the hand.
    private func freeSlot(_ table: inout Table, at time: Double) -> Int {
        if table.ring.count < capacity {
            table.ring.append("")
            return table.ring.count - 1
        }
        var victim = table.hand, most = -Double.infinity
        for step in 0..<min(Self.victimScan, capacity) {
            let slot = (table.hand + step) % capacity
            guard isLive(slot, table) else { victim = slot; break }
            let tokens = refilled(table.buckets[table.ring[slot]]!, at: time).tokens
            if tokens > most { victim = slot; most = tokens }
            if tokens >= burst { break }
        }
        table.hand = (victim + 1) % capacity
        if isLive(victim, table) { forget(table.ring[victim], in: &table) }
        return victim
    }
}
