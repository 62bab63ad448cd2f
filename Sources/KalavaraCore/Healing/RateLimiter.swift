import CEpoll
import Foundation
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

/// Background work (a placement pass, a scrub) must never take CPU from the event loop.
enum Background {
    /// Puts the calling thread (one of its own: the change cannot be undone unprivileged) in
    /// Linux's SCHED_IDLE class: it runs at full speed on an idle machine, but any normal
    /// thread that wakes up — the event loop with a request — preempts it at once. (Nice 19
    /// was not enough: a pass still halved the master's 302 rate, the loop waiting out the
    /// pass thread's time slice on each wake-up.)
    static func lowerPriority() {
        if kalavara_thread_idle_priority() != 0 {
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(kalavara_thread_id()), 19)
        }
    }
}
