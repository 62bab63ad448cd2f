import CEpoll
import Foundation
import Glibc
import Synchronization

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

/// The one shape of the daemons' background work: a thread of its own that runs a round of
/// work on a schedule, when woken, or both, until it is stopped.
///
/// - `start(_:)` starts the thread with the round to run; a second call, or one after
///   `stop`, does nothing.
/// - `wake()` asks for a round now. Wakes coalesce: any number of them before the next
///   round starts make one round, and a wake during a round makes one more after it.
///   `wake(after:)` asks for one no later than that many seconds from now.
/// - `stop()` stops the loop: no round starts after it, and it returns once a round in
///   flight has ended (a long round looks at `isStopping` and cuts itself short). It may be
///   called any number of times, before `start` or without it, from any thread; from the
///   loop's own round it only asks, since waiting there would wait forever.
/// - With `idle`, the thread runs in the SCHED_IDLE class from its first moment (see
///   `Background.lowerPriority`): for passes that must not take CPU from event loops.
/// - `progress` can be read from any thread: whether a round runs, how many finished and
///   when the last did, and `Status`, whatever the job reports through `report`.
///
/// A round that throws is logged with the loop's name, and the loop goes on. Schedules are
/// timed on the monotonic clock (setting the wall clock neither delays nor hurries a
/// round); the wall clock, which only stamps `lastRoundFinished`, can be injected.
///
/// Sendable by hand: the state is behind `condition`'s mutex; the thread is started once.
public final class BackgroundLoop<Status: Sendable>: @unchecked Sendable {
    public enum Schedule: Sendable {
        /// Rounds only when woken.
        case onWake
        /// A round every so many seconds, timed from the start of the last one, like a
        /// repeating timer: after a round that overran, the next starts at once.
        case every(Double)
        /// A round so many seconds after the last one ended.
        case pausing(Double)
        /// One round right after `start`; then the thread ends.
        case once
    }

    public struct Progress: Sendable {
        /// A round is in flight.
        public var running = false
        /// Rounds finished: a round that threw, or that a stop came during, does not count.
        public var rounds = 0
        /// Wall-clock time (Unix seconds) the last counted round finished.
        public var lastRoundFinished: Double?
        /// What the job reports.
        public var status: Status
    }

    let name: String
    let schedule: Schedule
    private let idle: Bool
    private let wallClock: @Sendable () -> Double
    private let condition = MonotonicCondition()
    /// Everything below is behind `condition`'s mutex, except `stopping`'s lock-free copy.
    private var state: Progress
    private var round: (() throws -> Void)?
    private var started = false
    private var stopRequested = false
    /// When a wake asked for the next round (monotonic seconds); nil: no wake pending.
    private var wakeDue: Double?
    private var thread: pthread_t?
    private let stopping = Atomic(false)

    public init(_ name: String, schedule: Schedule, idle: Bool = false, status: Status,
         wallClock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.name = name
        self.schedule = schedule
        self.idle = idle
        self.wallClock = wallClock
        state = Progress(status: status)
    }

    /// Starts the thread, which runs `round` as the schedule and wakes say.
    public func start(_ round: @escaping @Sendable () throws -> Void) {
        condition.lock()
        guard !started, !stopRequested else {
            condition.unlock()
            return
        }
        started = true
        self.round = round
        condition.unlock()
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    /// Asks for a round now (see the type's comment for how wakes coalesce).
    public func wake() { wake(after: 0) }

    /// Asks for a round no later than `seconds` from now; an earlier wake pending stands.
    public func wake(after seconds: Double) {
        let due = monotonicSeconds() + max(0, seconds)
        condition.lock()
        if wakeDue.map({ due < $0 }) ?? true { wakeDue = due }
        condition.broadcast()
        condition.unlock()
    }

    /// Stops the loop and waits for a round in flight (unless called from that round).
    public func stop() {
        condition.lock()
        stopRequested = true
        stopping.store(true, ordering: .relaxed)
        condition.broadcast()
        if let thread, pthread_equal(thread, pthread_self()) != 0 {
            condition.unlock()
            return
        }
        while state.running { condition.wait() }
        condition.unlock()
    }

    /// Whether `stop` was called: a long round checks this between its steps.
    public var isStopping: Bool { stopping.load(ordering: .relaxed) }

    /// Waits `seconds` inside a round (a retry's back-off, say), returning at once when the
    /// loop is stopped. Returns false if it was.
    @discardableResult
    public func pause(_ seconds: Double) -> Bool {
        let until = monotonicSeconds() + seconds
        condition.lock()
        defer { condition.unlock() }
        while !stopRequested, monotonicSeconds() < until { condition.wait(until: until) }
        return !stopRequested
    }

    public var progress: Progress {
        condition.lock()
        defer { condition.unlock() }
        return state
    }

    public var status: Status { progress.status }

    /// Changes what the job reports, from any thread. `change` runs under the loop's lock:
    /// it must not call the loop.
    @discardableResult
    public func report<Result>(_ change: (inout Status) throws -> Result) rethrows -> Result {
        condition.lock()
        defer { condition.unlock() }
        return try change(&state.status)
    }

    // MARK: The thread

    private func run() {
        if idle { Background.lowerPriority() }
        condition.lock()
        thread = pthread_self()
        var next: Double? = switch schedule {
        case .onWake: nil
        case .once: monotonicSeconds()
        case .every(let seconds), .pausing(let seconds): monotonicSeconds() + seconds
        }
        while !stopRequested, let round {
            let due = [next, wakeDue].compactMap { $0 }.min()
            guard let due else {
                condition.wait()
                continue
            }
            let now = monotonicSeconds()
            guard now >= due else {
                condition.wait(until: due)
                continue
            }
            wakeDue = nil
            state.running = true
            condition.unlock()
            let finished: Bool
            do {
                try round()
                finished = true
            } catch {
                Log.error("\(name): \(error)")
                finished = false
            }
            let ended = monotonicSeconds()
            let time = finished ? wallClock() : nil
            condition.lock()
            state.running = false
            if let time, !stopRequested {
                state.rounds += 1
                state.lastRoundFinished = time
            }
            condition.broadcast() // a stop waiting for this round
            switch schedule {
            case .onWake: next = nil
            case .once: stopRequested = true
            case .every(let seconds): next = now + seconds
            case .pausing(let seconds): next = ended + seconds
            }
        }
        round = nil // what the round holds goes with the loop
        condition.unlock()
    }
}

extension BackgroundLoop where Status == Void {
    /// A loop whose job reports nothing beyond its rounds.
    public convenience init(_ name: String, schedule: Schedule, idle: Bool = false) {
        self.init(name, schedule: schedule, idle: idle, status: ())
    }
}

/// A mutex and a condition variable whose timed waits run on the monotonic clock
/// (`NSCondition` waits on the wall clock: setting it back would stretch a wait).
public final class MonotonicCondition: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let variable = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(variable, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(variable)
        pthread_mutex_destroy(mutex)
        variable.deallocate()
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }
    public func broadcast() { pthread_cond_broadcast(variable) }
    public func wait() { pthread_cond_wait(variable, mutex) }

    /// Waits until woken or `deadline` (monotonic seconds, as `monotonicSeconds()`).
    public func wait(until deadline: Double) {
        let deadline = min(deadline, 1e12) // a schedule of 1e300 s waits, rather than trapping in Int()
        let whole = deadline.rounded(.down)
        var time = timespec(tv_sec: Int(whole), tv_nsec: Int((deadline - whole) * 1e9))
        pthread_cond_timedwait(variable, mutex, &time)
    }
}
