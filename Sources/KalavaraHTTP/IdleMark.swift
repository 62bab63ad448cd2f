import Synchronization

/// Since when a connection has been idle, published by the thread that owns it for the
/// accepting thread that evicts idle connections to make room (`HTTPServer.admit`), and the
/// handshake that keeps those two from both taking the connection.
///
/// Why a handshake: the owner reads a request and starts serving it without the server's
/// lock, so an evictor that merely read "idle" could shut down a connection whose request
/// was already parsed and running, and the client would see a reset after sending it. Here
/// one atomic word is idle (the time's bits), `busy`, or `evicted`: the evictor turns the
/// idle value it saw into `evicted` by compare-and-exchange and shuts the socket down only
/// if that won; the owner turns it into `busy` the same way when a request's head is
/// complete, and drops the connection unserved if it finds `evicted` instead. Whoever comes
/// second sees the other's mark, so a request is either served whole or never started.
struct IdleMark: ~Copyable, Sendable {
    private let bits: Atomic<UInt64>
    private static let busy = UInt64.max
    private static let evicted = UInt64.max - 1

    init(idleSince: Double) { bits = Atomic(idleSince.bitPattern) }

    /// The owner's new state: idle since a time, or busy (nil). False, and nothing changed,
    /// if the connection was evicted: its owner must close it without serving anything.
    @discardableResult
    func publish(idleSince: Double?) -> Bool {
        let desired = idleSince?.bitPattern ?? Self.busy
        var expected = bits.load(ordering: .relaxed)
        while expected != Self.evicted {
            let (exchanged, original) = bits.compareExchange(expected: expected, desired: desired, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            expected = original
        }
        return false
    }

    /// Since when it is idle, or nil when busy or evicted. May be out of date at once: pass
    /// it to `evict(ifIdleSince:)`, which fails if it is.
    var idleSince: Double? {
        let value = bits.load(ordering: .relaxed)
        return value == Self.busy || value == Self.evicted ? nil : Double(bitPattern: value)
    }

    /// Marks the connection evicted if it is still idle since `since`; true if this won it
    /// (the caller shuts it down), false if its owner has taken it meanwhile.
    func evict(ifIdleSince since: Double) -> Bool {
        bits.compareExchange(expected: since.bitPattern, desired: Self.evicted, ordering: .acquiringAndReleasing).exchanged
    }

    var isEvicted: Bool { bits.load(ordering: .acquiring) == Self.evicted }
}
