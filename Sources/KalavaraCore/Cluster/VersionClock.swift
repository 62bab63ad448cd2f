import Foundation

/// Hands out write versions: unique, increasing across the cluster's life, and telling the
/// time they were issued.
///
/// A version is `milliseconds since 1970 << 16 | counter`, or the previous version + 1 when
/// that is larger (clock stepped back, or more than 65536 versions in a millisecond). The
/// embedded time lets the master refuse a commit whose ticket is too old, which is what
/// makes it safe to forget tombstones later. To survive restarts without a disk write per
/// version, the clock persists a ceiling a few seconds ahead and never issues past it
/// without raising it first; after a restart it starts at the stored ceiling.
public final class VersionClock {
    private let lock = NSLock()
    private var last: UInt64
    private var ceiling: UInt64
    private let persistCeiling: (UInt64) throws -> Void
    /// How far ahead of the last version the persisted ceiling is set: about 4 s of time.
    static let reservation: UInt64 = 4000 << 16

    public init(storedCeiling: UInt64, persistCeiling: @escaping (UInt64) throws -> Void) throws {
        self.persistCeiling = persistCeiling
        last = storedCeiling
        ceiling = storedCeiling
    }

    /// The next version.
    public func next() throws -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        let version = max(last + 1, Self.now())
        if version >= ceiling {
            let newCeiling = version + Self.reservation
            try persistCeiling(newCeiling)
            ceiling = newCeiling
        }
        last = version
        return version
    }

    /// The newest version handed out so far.
    public var lastIssued: UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return last
    }

    static func now() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) << 16 }

    /// The wall-clock time a version was issued at, in seconds since 1970.
    public static func issueTime(of version: UInt64) -> Double { Double(version >> 16) / 1000 }
}
