import Foundation
import Synchronization

/// Hands out write versions: unique, increasing across the cluster's life, and telling the
/// time they were issued.
///
/// A version is `milliseconds since 1970 << 16 | counter`, or the previous version + 1 when
/// that is larger (clock stepped back, or more than 65536 versions in a millisecond). The
/// embedded time lets the master refuse a commit whose ticket is too old, which is what
/// makes it safe to forget tombstones later. Both are measured against the clock's
/// `present`, never the bare wall clock: a wall clock that jumps forward (letting tombstones
/// expire) and back (making an old ticket look young) must not let that ticket commit over
/// a delete whose tombstone is gone. To survive restarts without a disk write per
/// version, the clock persists a ceiling a few seconds ahead and never issues past it
/// without raising it first; after a restart it starts at the stored ceiling.
///
/// The ceiling is written outside the lock that issuing takes: a synced write must never
/// stall a caller that only needs a version below the current ceiling. It is raised early,
/// by whoever issues past its half-way mark, so callers seldom wait for it at all.
final class VersionClock: Sendable {
    private struct State {
        var last: UInt64
        var ceiling: UInt64
    }
    private let state: Mutex<State>
    /// Serialises ceiling writes (held across the write; issuing never takes it).
    private let raising = Mutex(())
    private let persistCeiling: @Sendable (UInt64) throws -> Void
    /// The wall clock, in version units (injected by tests).
    private let wallClock: @Sendable () -> UInt64
    /// How far ahead of the last version the persisted ceiling is set: about 4 s of time.
    static let reservation: UInt64 = 4000 << 16
    /// True while a background raise (see `nextWithoutWaiting`) is queued or running.
    private let raiseQueued = Atomic<Bool>(false)

    init(storedCeiling: UInt64, wallClock: @escaping @Sendable () -> UInt64 = VersionClock.wallNow,
                persistCeiling: @escaping @Sendable (UInt64) throws -> Void) throws {
        self.persistCeiling = persistCeiling
        self.wallClock = wallClock
        state = Mutex(State(last: storedCeiling, ceiling: storedCeiling))
    }

    /// The next version.
    func next() throws -> UInt64 {
        while true {
            let (version, ceiling) = state.withLock { state -> (UInt64?, UInt64) in
                let candidate = max(state.last + 1, wallClock())
                guard candidate < state.ceiling else { return (nil, state.ceiling) }
                state.last = candidate
                return (candidate, state.ceiling)
            }
            if let version {
                if version + Self.reservation / 2 >= ceiling { try raiseCeiling(above: version) }
                return version
            }
            try raiseCeiling(above: max(ceiling, wallClock()))
        }
    }

    /// The next version for a caller that must not wait on the disk (the event loop): past
    /// the half-way mark the ceiling is raised on another thread; nil only when the ceiling
    /// itself is reached (that raise has been stuck for seconds), and then nothing is issued.
    func nextWithoutWaiting() -> UInt64? {
        let (version, ceiling) = state.withLock { state -> (UInt64?, UInt64) in
            let candidate = max(state.last + 1, wallClock())
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
    func advance(past version: UInt64) throws {
        let ceiling = state.withLock { state -> UInt64 in
            state.last = max(state.last, version)
            return state.ceiling
        }
        if version + Self.reservation / 2 >= ceiling { try raiseCeiling(above: version) }
    }

    /// Continues above `ceiling`: a new leader takes over its predecessor's ceiling, above
    /// any version that one could have issued.
    public func resume(atCeiling ceiling: UInt64) throws {
        state.withLock { state in
            state.last = max(state.last, ceiling)
            state.ceiling = max(state.ceiling, ceiling)
        }
        try advance(past: ceiling)
    }

    /// The newest version handed out so far.
    var lastIssued: UInt64 { state.withLock { $0.last } }

    /// The clock's present: the wall clock, or the newest version issued when the wall clock
    /// is behind it (stepped back). It never runs backwards, across restarts either (the clock
    /// starts at its stored ceiling): what a ticket's age is measured against.
    var present: UInt64 { max(lastIssued, wallClock()) }

    /// Moves the clock up to its present (persisted, as any version) and returns it. Tombstone
    /// expiry measures against this: once a tombstone is dropped as older than the present
    /// less the ticket lifetime, no later commit is measured against an earlier present, even
    /// if the wall clock steps back, so a ticket older than the tombstone stays refused. (A
    /// clock that jumped far ahead and back thus keeps tombstones until the wall clock
    /// catches up: space, never a resurrected key.)
    func settlePresent() throws -> UInt64 {
        let now = present
        try advance(past: now)
        return now
    }

    /// The oldest version a ticket may carry to still commit at `present`: a lifetime earlier.
    static func cutoff(at present: UInt64, lifetime: Double) -> UInt64 {
        let span = UInt64(max(0, lifetime) * 1000) << 16
        return present > span ? present - span : 0
    }

    /// Whether a ticket for `version` is older than `lifetime` seconds by the clock's present.
    func hasExpired(_ version: UInt64, lifetime: Double) -> Bool {
        version < Self.cutoff(at: present, lifetime: lifetime)
    }

    /// The wall clock in version units (milliseconds since 1970, shifted).
    static func wallNow() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) << 16 }

    /// The wall-clock time a version was issued at, in seconds since 1970.
    static func issueTime(of version: UInt64) -> Double { Double(version >> 16) / 1000 }
}
