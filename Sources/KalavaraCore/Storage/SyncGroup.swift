import KalavaraSupport

/// Concurrent writers' log syncs made into one, the way RocksDB's own group commit makes
/// them: a writer whose write an fsync already in flight does not cover waits for it and
/// then for the next, which one of the waiters runs for them all.
///
/// RocksDB's `FlushWAL(sync)` does not group: each caller runs an fsync of its own. A
/// master group's leader, which logs unsynced and then syncs (so that its standbys fetch a
/// write while its own disk syncs it), ran one `fdatasync` per PUT under 16 clients where a
/// single master's synced writes ran 0.07: measured with `perf stat -e
/// syscalls:sys_enter_fdatasync` on each.
final class SyncGroup: @unchecked Sendable {
    /// The fields below are behind its mutex.
    private let condition = MonotonicCondition()
    private var syncedThrough: UInt64 = 0
    private var syncing = false
    /// The last sync that failed: what it was to cover, and why.
    private var lastFailure: (covering: UInt64, error: any Error)?

    /// Returns once everything logged through `sequence` (from 1) is durable. `latest` is the
    /// log's end now; `sync` makes everything logged so far durable. Throws the failure of
    /// a sync that was to cover it and did not (nor any before): after a failed fsync, a
    /// later one that succeeds says nothing of the pages the failed one lost.
    func sync(through sequence: UInt64, latest: () -> UInt64, _ sync: () throws -> Void) throws {
        precondition(sequence > 0, "a write's sequence starts at 1")
        condition.lock()
        while true {
            if syncedThrough >= sequence {
                condition.unlock()
                return
            }
            if let failure = lastFailure, failure.covering >= sequence {
                condition.unlock()
                throw failure.error
            }
            if !syncing { break }
            condition.wait()
        }
        syncing = true
        // Read before the sync starts: every write logged by now is covered by it.
        let covered = latest()
        condition.unlock()
        var failure: (any Error)?
        do { try sync() } catch { failure = error }
        condition.lock()
        if let failure {
            lastFailure = (covered, failure)
        } else {
            syncedThrough = max(syncedThrough, covered)
        }
        syncing = false
        condition.broadcast()
        condition.unlock()
        if let failure { throw failure }
    }
}
