import Foundation
import Synchronization

/// Seconds on a clock that never jumps: what the servers' timeouts and the background
/// loops are measured on.
///
/// A protocol so tests can drive it (Hummingbird's state machines take their clock the same
/// way): with `ManualClock`, an idle or read timeout fires when the test moves time on,
/// not after the test has slept through it.
public protocol ServerClock: Sendable {
    func now() -> Double
}

/// The system's monotonic clock.
public struct MonotonicClock: ServerClock {
    public init() {}
    public func now() -> Double { monotonicSeconds() }
}

/// A clock that moves only when told to.
public final class ManualClock: ServerClock {
    private let seconds: Mutex<Double>
    public init(_ start: Double = 1000) { seconds = Mutex(start) }
    public func now() -> Double { seconds.withLock { $0 } }
    public func advance(by delta: Double) { seconds.withLock { $0 += delta } }
}

/// Seconds on a clock that never jumps; for timeouts and durations.
public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
