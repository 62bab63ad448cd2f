import Foundation
import KalavaraSupport
import Synchronization

/// A byte-rate limit shared by threads: each caller reserves its bytes and sleeps until the
/// budget covers them, so the rate holds whatever the sizes (one 64 MiB copy waits as long
/// as 65,536 copies of 1 KiB). Zero means no limit.
final class RateLimiter: Sendable {
    private let bytesPerSecond: Double
    /// The monotonic time at which the budget is next free.
    private let nextFree = Mutex(0.0)

    init(bytesPerSecond: Double) { self.bytesPerSecond = bytesPerSecond }

    func take(_ bytes: Int) {
        guard bytesPerSecond > 0, bytes > 0 else { return }
        let cost = Double(bytes) / bytesPerSecond
        let wait = nextFree.withLock { next -> Double in
            let now = monotonicSeconds()
            let start = max(next, now - 0.5) // at most half a second of unused budget carries over
            next = start + cost
            return start - now
        }
        if wait > 0 { Thread.sleep(forTimeInterval: wait) }
    }
}
