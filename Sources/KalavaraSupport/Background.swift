import CEpoll
import Glibc

/// Background work (a placement pass, a scrub) must never take CPU from the event loop.
public enum Background {
    /// Puts the calling thread (one of its own: the change cannot be undone unprivileged) in
    /// Linux's SCHED_IDLE class: it runs at full speed on an idle machine, but any normal
    /// thread that wakes up — the event loop with a request — preempts it at once. (Nice 19
    /// was not enough: a pass still halved the master's 302 rate, the loop waiting out the
    /// pass thread's time slice on each wake-up.)
    public static func lowerPriority() {
        if kalavara_thread_idle_priority() != 0 {
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(kalavara_thread_id()), 19)
        }
    }
}
