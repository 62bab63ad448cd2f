import Foundation
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
/// Memory is bounded: at most `capacity` addresses are tracked; a full table first forgets
/// the addresses whose bucket has refilled (they are as good as new), then the one with the
/// most tokens left (the least suspicious).
public final class AuthFailureLimiter: Sendable {
    public let burst: Double
    public let refillPerSecond: Double
    public let capacity: Int
    private let now: @Sendable () -> Double

    private struct Bucket {
        var tokens: Double
        var updated: Double
    }
    private let buckets = Mutex<[String: Bucket]>([:])

    public init(burst: Int = 10, refillPerSecond: Double = 0.5, capacity: Int = 10_000,
                now: @escaping @Sendable () -> Double = { monotonicSeconds() }) {
        self.burst = Double(burst)
        self.refillPerSecond = refillPerSecond
        self.capacity = capacity
        self.now = now
    }

    /// Whole seconds until `address` may try again, or nil if it may try now.
    public func retryAfter(_ address: String) -> Int? {
        let time = now()
        return buckets.withLock { buckets in
            guard let bucket = buckets[address].map({ refilled($0, at: time) }), bucket.tokens < 1 else { return nil }
            return max(1, Int(((1 - bucket.tokens) / refillPerSecond).rounded(.up)))
        }
    }

    /// Records a failed attempt from `address`; returns true when this one emptied its
    /// bucket (the moment worth a warning).
    @discardableResult
    public func failed(_ address: String) -> Bool {
        let time = now()
        return buckets.withLock { buckets in
            if buckets[address] == nil, buckets.count >= capacity { makeRoom(&buckets, at: time) }
            var bucket = buckets[address].map { refilled($0, at: time) } ?? Bucket(tokens: burst, updated: time)
            bucket.tokens = max(0, bucket.tokens - 1)
            buckets[address] = bucket
            return bucket.tokens < 1
        }
    }

    /// Addresses tracked now.
    public var count: Int { buckets.withLock { $0.count } }

    private func refilled(_ bucket: Bucket, at time: Double) -> Bucket {
        Bucket(tokens: min(burst, bucket.tokens + (time - bucket.updated) * refillPerSecond), updated: time)
    }

    private func makeRoom(_ buckets: inout [String: Bucket], at time: Double) {
        buckets = buckets.filter { refilled($0.value, at: time).tokens < burst }
        guard buckets.count >= capacity else { return }
        if let fullest = buckets.max(by: { refilled($0.value, at: time).tokens < refilled($1.value, at: time).tokens }) {
            buckets[fullest.key] = nil
        }
    }
}
