import Foundation
import KalavaraSupport
import Synchronization

/// Removes this volume's copies that are no longer wanted — the versions a committed delete
/// made invisible, and superseded versions once their grace has passed — in batches, on one
/// thread of its own. A batch journals all its removals, waits for one journal sync, removes
/// the files, and reports them to the master in one call per master. Under load a removal
/// thus costs a share of one sync and of one request, not a sync, a thread hand-off and a
/// request of its own. Nothing here is on a client's path: the client had its answer.
///
/// What a crash loses from the queue is not lost: the master queued every removal with the
/// commit that made it necessary, and asks again until this volume reports it done.
final class Removals: Sendable {
    struct Job: Sendable {
        let key: Key
        /// Every version of the key below this one goes.
        let below: UInt64
        /// Whom to tell, and as which holder; nil: the volume's known identity.
        let master: String?
        let holder: String?
    }

    private unowned let volume: Volume
    /// The jobs to do now; those to do later, in the order they are due, each with the
    /// monotonic time from which it may be done; whether `stop` has closed the queue.
    private let queue = Mutex<(ready: [Job], later: [(job: Job, due: Double)], closed: Bool)>(([], [], false))
    /// Drains the due jobs when woken (by `enqueue`, at once or when a delayed job is due).
    private let loop = BackgroundLoop("removals", schedule: .onWake)
    /// Jobs taken per batch at most.
    static let batchLimit = 512

    init(volume: Volume) {
        self.volume = volume
        loop.start { [self] in drain() }
    }

    /// Queues a job, to be done at once or no sooner than `delay` seconds from now.
    func enqueue(_ job: Job, after delay: Double = 0) {
        let due = monotonicSeconds() + delay
        let queued = queue.withLock { queue in
            guard !queue.closed else { return false } // the master's removal queue asks again after a restart
            if delay <= 0 {
                queue.ready.append(job)
            } else {
                // Delays are all alike (the superseded grace): this looks at few jobs.
                let position = queue.later.lastIndex { $0.due <= due }.map { $0 + 1 } ?? 0
                queue.later.insert((job, due), at: position)
            }
            return true
        }
        if queued { loop.wake(after: delay) }
    }

    /// Finishes what is queued and due, then stops the thread. Delayed jobs not due yet
    /// are dropped: the master's removal queue asks for them again.
    func stop() {
        queue.withLock { $0.closed = true }
        loop.stop()
        drain() // what was queued after the loop's last round
    }

    /// Does the due jobs, a batch at a time, and asks to be woken when the next job is due.
    private func drain() {
        while true {
            let now = monotonicSeconds()
            let (batch, next) = queue.withLock { queue -> ([Job], Double?) in
                let due = queue.later.prefix { $0.due <= now }.count
                queue.ready += queue.later.prefix(due).map(\.job)
                queue.later.removeFirst(due)
                let batch = Array(queue.ready.prefix(Self.batchLimit))
                queue.ready.removeFirst(batch.count)
                return (batch, queue.later.first?.due)
            }
            if batch.isEmpty {
                if let next { loop.wake(after: next - now) }
                return
            }
            process(batch)
        }
    }

    private func process(_ jobs: [Job]) {
        let journal = volume.journal, store = volume.store
        let drops = jobs.enumerated().flatMap { index, job in
            store.versions(of: job.key).filter { $0 < job.below }.map { (entry: UncommittedJournal.Entry(key: job.key, version: $0), job: index) }
        }
        var failed = Set<Int>()
        do {
            try journal.removing(drops.map(\.entry)) { durably in
                for drop in drops {
                    do {
                        try store.remove(drop.entry.key, version: drop.entry.version, durably: durably)
                        journal.strike(drop.entry.key, version: drop.entry.version)
                    } catch {
                        Log.warning("cannot remove \(drop.entry.key) v\(drop.entry.version): \(error)")
                        failed.insert(drop.job)
                    }
                }
            }
        } catch {
            Log.warning("cannot journal \(drops.count) removals: \(error)")
            drops.forEach { failed.insert($0.job) }
        }
        // On a full disk, removed files must give their blocks back, not wait to be recycled.
        if !journal.reserve.isHeld {
            store.dropRecycled()
            journal.reserve.refill()
        }
        // Only a job whose every version went is reported: otherwise the master's queue
        // keeps the entry and asks again.
        var reports: [String: (holder: String?, jobs: [Job])] = [:]
        for (index, job) in jobs.enumerated() where !failed.contains(index) {
            let master = job.master ?? ""
            reports[master + " " + (job.holder ?? ""), default: (job.holder, [])].jobs.append(job)
        }
        for (_, report) in reports {
            volume.master.reportRemoved(report.jobs.map { ($0.key, $0.below) }, master: report.jobs[0].master, holder: report.holder)
        }
    }
}
