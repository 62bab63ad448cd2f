// JournalLog's checkpoints: syncing the data's filesystem, after which the records of
// small values and removals drop out of the journal.
import CEpoll
import Foundation
import KalavaraSupport
import Prometheus

extension JournalLog {
    /// Starts checkpointing: every `interval` seconds while records are unsettled, waits
    /// for their file operations, syncs the filesystem holding `directory`, and rewrites
    /// the journal without them. Until this is called, `appendLogged` declines.
    func startCheckpoints(syncing directory: String, every interval: Double, measuredBy histogram: DurationHistogram?) throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StorageError.io("cannot open \(directory)", errno) }
        // Woken at least once a second: a reserve given back is taken again as soon as
        // space returns (read-and-delete mode ends by itself). The loop's status is when
        // the last checkpoint started (monotonic seconds).
        let loop = BackgroundLoop("journal-checkpoint", schedule: .pausing(min(interval, 1)), status: monotonicSeconds())
        lock.lock()
        defer { lock.unlock() }
        checkpointFD = fd
        syncfsTimes = histogram
        guard !stopped else { return } // closed already: nothing would stop the loop
        checkpoints = loop
        loop.start { [self] in
            let now = monotonicSeconds()
            if now - loop.status >= interval {
                loop.report { $0 = now }
                try? checkpoint()
            }
            if !reserve.isHeld { reserve.refill() }
        }
    }

    /// Makes every file operation recorded so far durable by syncing the filesystem, then
    /// drops their records from the journal.
    func checkpoint() throws {
        lock.lock()
        guard checkpointFD >= 0, !settlements.isEmpty, !stopped, !syncfsFailed else {
            lock.unlock()
            return
        }
        let target = appended
        // A rename or removal in flight now is done within moments of its journal sync.
        checkpointWaiting = true
        while settlements.inFlight.contains(where: { $0 <= target }), !stopped {
            _ = lock.wait(until: Date(timeIntervalSinceNow: 0.1))
        }
        checkpointWaiting = false
        if stopped {
            lock.unlock()
            return
        }
        let fd = checkpointFD, syncfsTimes = syncfsTimes
        lock.unlock()
        let synced = syncfsTimes.map { times in times.time { kalavara_syncfs(fd) } } ?? kalavara_syncfs(fd)
        lock.lock()
        defer { lock.unlock() }
        guard synced == 0 else {
            // The kernel reports a writeback error to one syncfs only: a later one that
            // succeeds says nothing of the pages that failed. From here the records stay
            // (the journal remains those values' durable copy) and every write fsyncs its
            // own file again.
            let code = errno
            syncfsFailed = true
            Log.error("journal checkpoint: syncfs failed (\(String(cString: strerror(code)))); small writes fsync their files from now on")
            throw StorageError.io("syncfs", code)
        }
        settlements.forget(upTo: target)
        try compactLocked()
    }
}
