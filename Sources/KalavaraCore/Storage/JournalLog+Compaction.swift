// JournalLog's compaction: the file rewritten with only what must survive.
import Foundation

extension JournalLog {
    /// Rewrites the file now (start-up).
    func compact() throws {
        lock.lock()
        defer { lock.unlock() }
        try compactLocked()
    }

    /// Replaces the file with one holding only the pending entries (tmp, fsync, rename).
    /// Called with the lock held. On a full disk, the reserve is released and it is tried
    /// once more: a compaction is what lets a start-up or a checkpoint go on.
    func compactLocked() throws {
        do {
            try compactOnce()
        } catch where SpaceReserve.isFull(error) && reserve.release() {
            try compactOnce()
        }
    }

    private func compactOnce() throws {
        while syncing { lock.wait() } // the syncer is using the current descriptor
        let tmp = path + ".new"
        // Additions and strikes take `lock` too, so this copy is exactly what the file must hold.
        let text = JournalFormat.compacted(pending: ledger.snapshot, unsettled: settlements.records.mapValues(\.settlement))
        let newFD = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard newFD >= 0 else { throw StorageError.io("cannot create \(tmp)", errno) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ write(newFD, $0.baseAddress, $0.count) }) == bytes.count, fsync(newFD) == 0 else {
            let code = errno
            Glibc.close(newFD)
            unlink(tmp) // a partial copy must not hold on to the space it took
            throw StorageError.io("cannot write \(tmp)", code)
        }
        Glibc.close(newFD)
        let reopened = open(tmp, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard reopened >= 0 else { throw StorageError.io("cannot open \(tmp)", errno) }
        guard rename(tmp, path) == 0 else {
            Glibc.close(reopened)
            throw StorageError.io("cannot replace \(path)", errno)
        }
        // From the rename on, appends must go to the new file, whatever happens next.
        if fd >= 0 { Glibc.close(fd) }
        fd = reopened
        strikesSinceCompaction = 0
        try FileStore.syncDirectory((path as NSString).deletingLastPathComponent)
        synced = appended // the new file holds every pending entry, synced
        lock.broadcast()
    }

    /// Opens the journal as it stands for appending, cut back to its last whole line (a
    /// record torn by a crash must not be glued to the next one): start-up on a disk too
    /// full for the compacted copy. Truncating needs no space.
    func reopenInPlace(keeping length: Int) throws {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw StorageError.io("cannot open \(path)", errno) }
        guard ftruncate(descriptor, off_t(length)) == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw StorageError.io("cannot cut \(path) back to its last record", code)
        }
        lock.lock()
        fd = descriptor
        lock.unlock()
    }
}
