import Foundation

/// Serialises work per key without a lock per key: a key maps to one of a fixed set of
/// locks. Commits of one key run one at a time (read, compare versions, write); commits
/// of different keys rarely share a lock, so they proceed together and their synced
/// RocksDB writes share fsyncs.
final class StripedLock {
    private let locks: [NSLock]

    init(stripes: Int = 256) {
        locks = (0..<stripes).map { _ in NSLock() }
    }

    func withLock<T>(for key: Key, _ body: () throws -> T) rethrows -> T {
        let lock = self.lock(for: key)
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// `body` under the key's lock if it is free now; nil (and `body` not run) if it is held.
    func ifFree<T>(for key: Key, _ body: () throws -> T) rethrows -> T? {
        let lock = self.lock(for: key)
        guard lock.try() else { return nil }
        defer { lock.unlock() }
        return try body()
    }

    private func lock(for key: Key) -> NSLock {
        locks[Int(StableHash.hash(key.bytes) % UInt64(locks.count))]
    }
}
