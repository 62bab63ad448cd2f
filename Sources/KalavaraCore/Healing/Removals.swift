import Foundation

/// Removes this volume's copies that are no longer wanted — the versions a committed delete
/// made invisible, and superseded versions once their grace has passed — in batches, on one
/// thread of its own. A batch journals all its removals, waits for one journal sync, removes
/// the files, and reports them to the master in one call per master. Under load a removal
/// thus costs a share of one sync and of one request, not a sync, a thread hand-off and a
/// request of its own. Nothing here is on a client's path: the client had its answer.
///
/// What a crash loses from the queue is not lost: the master queued every removal with the
/// commit that made it necessary, and asks again until this volume reports it done.
///
/// Sendable by hand: the queue is behind `lock`; the volume is immutable.
final class Removals: @unchecked Sendable {
    struct Job {
        let key: Key
        /// Every version of the key below this one goes.
        let below: UInt64
        /// Whom to tell, and as which holder; nil: the volume's known identity.
        let master: String?
        let holder: String?
    }

    private unowned let volume: Volume
    private let lock = NSCondition()
    private var queued: [Job] = []
    private var stopped = false
    private var running = false
    /// Jobs taken per batch at most.
    static let batchLimit = 512

    init(volume: Volume) {
        self.volume = volume
        let thread = Thread { [self] in loop() }
        thread.name = "removals"
        thread.start()
    }

    func enqueue(_ job: Job) {
        lock.lock()
        guard !stopped else { // the master's removal queue asks again after a restart
            lock.unlock()
            return
        }
        queued.append(job)
        lock.signal()
        lock.unlock()
    }

    /// Finishes what is queued, then stops the thread.
    func stop() {
        lock.lock()
        stopped = true
        lock.broadcast()
        while running || !queued.isEmpty { lock.wait() }
        lock.unlock()
    }

    private func loop() {
        lock.lock()
        while true {
            while queued.isEmpty, !stopped { lock.wait() }
            if queued.isEmpty { break }
            let batch = Array(queued.prefix(Self.batchLimit))
            queued.removeFirst(batch.count)
            running = true
            lock.unlock()
            process(batch)
            lock.lock()
            running = false
            lock.broadcast()
        }
        lock.broadcast()
        lock.unlock()
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
