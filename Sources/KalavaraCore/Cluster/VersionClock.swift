import Foundation
import Synchronization

/// Hands out write versions: unique, increasing across the cluster's life, and telling the
/// time they were issued.
///
/// A version is `milliseconds since 1970 << 16 | counter`, or the previous version + 1 when
/// that is larger (clock stepped back, or more than 65536 versions in a millisecond). The
/// embedded time lets the master refuse a commit whose ticket is too old, which is what
/// makes it safe to forget tombstones later. To survive restarts without a disk write per
/// version, the clock persists a ceiling a few seconds ahead and never issues past it
/// without raising it first; after a restart it starts at the stored ceiling.
///
/// The ceiling is written outside the lock that issuing takes: a synced write must never
/// stall a caller that only needs a version below the current ceiling. It is raised early,
/// by whoever issues past its half-way mark, so callers seldom wait for it at all.
public final class VersionClock: Sendable {
    private struct State {
        var last: UInt64
        var ceiling: UInt64
    }
    private let state: Mutex<State>
    /// Serialises ceiling writes (held across the write; issuing never takes it).
    private let raising = Mutex(())
    private let persistCeiling: @Sendable (UInt64) throws -> Void
    /// How far ahead of the last version the persisted ceiling is set: about 4 s of time.
    static let reservation: UInt64 = 4000 << 16
    /// True while a background raise (see `nextWithoutWaiting`) is queued or running.
    private let raiseQueued = Atomic<Bool>(false)

    public init(storedCeiling: UInt64, persistCeiling: @escaping @Sendable (UInt64) throws -> Void) throws {
        self.persistCeiling = persistCeiling
        state = Mutex(State(last: storedCeiling, ceiling: storedCeiling))
    }

    /// The next version.
    public func next() throws -> UInt64 {
        while true {
            let (version, ceiling) = state.withLock { state -> (UInt64?, UInt64) in
                let candidate = max(state.last + 1, Self.now())
                guard candidate < state.ceiling else { return (nil, state.ceiling) }
                state.last = candidate
                return (candidate, state.ceiling)
            }
            if let version {
                if version + Self.reservation / 2 >= ceiling { try raiseCeiling(above: version) }
                return version
            }
            try raiseCeiling(above: max(ceiling, Self.now()))
        }
    }

    /// The next version for a caller that must not wait on the disk (the event loop): past
    /// the half-way mark the ceiling is raised on another thread; nil only when the ceiling
    /// itself is reached (that raise has been stuck for seconds), and then nothing is issued.
    public func nextWithoutWaiting() -> UInt64? {
        let (version, ceiling) = state.withLock { state -> (UInt64?, UInt64) in
            let candidate = max(state.last + 1, Self.now())
            guard candidate < state.ceiling else { return (nil, state.ceiling) }
            state.last = candidate
            return (candidate, state.ceiling)
        }
        guard let version else { return nil }
        if version + Self.reservation / 2 >= ceiling,
           raiseQueued.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            DispatchQueue.global().async { [self] in
                try? raiseCeiling(above: version)
                raiseQueued.store(false, ordering: .releasing)
            }
        }
        return version
    }

    /// Persists a ceiling a reservation above `version`, unless another caller already has.
    private func raiseCeiling(above version: UInt64) throws {
        try raising.withLock { _ in
            let wanted = version + Self.reservation
            guard state.withLock({ $0.ceiling }) <= version + Self.reservation / 2 else { return } // raised meanwhile
            try persistCeiling(wanted)
            state.withLock { $0.ceiling = max($0.ceiling, wanted) }
        }
    }

    /// Moves the clock past `version` (a rebuild found it on a volume), so no version at or
    /// below it is ever issued again.
    public func advance(past version: UInt64) throws {
        let ceiling = state.withLock { state -> UInt64 in
            state.last = max(state.last, version)
            return state.ceiling
        }
        if version + Self.reservation / 2 >= ceiling { try raiseCeiling(above: version) }
    }

    /// The newest version handed out so far.
    public var lastIssued: UInt64 { state.withLock { $0.last } }

    static func now() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) << 16 }

    /// The wall-clock time a version was issued at, in seconds since 1970.
    public static func issueTime(of version: UInt64) -> Double { Double(version >> 16) / 1000 }
}
