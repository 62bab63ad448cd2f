// JournalLog's compaction: the file rewritten with only what must survive, written
// outside the writers' lock and swapped in under it.
import Foundation

extension JournalLog {
    /// Rewrites the file now (start-up, tests). `afterWrite` runs once the new file is
    /// written and synced, before the lock is taken again to swap it in (a test's hook).
    func compact(afterWrite: () -> Void = {}) throws {
        lock.lock()
        defer { lock.unlock() }
        try compactLocked(afterWrite: afterWrite)
    }

    /// Replaces the file with one holding only the pending entries and the unsettled
    /// records. Called with the lock held, which it gives up while the new file is written
    /// (see `compactOnce`); one compaction at a time, none once closed. On a full disk, the
    /// reserve is released and it is tried once more: a compaction is what lets a start-up
    /// or a checkpoint go on.
    func compactLocked(afterWrite: () -> Void = {}) throws {
        while compacting { lock.wait() }
        guard !stopped else { return }
        compacting = true
        defer {
            compacting = false
            lock.broadcast()
        }
        do {
            try compactOnce(afterWrite)
        } catch where SpaceReserve.isFull(error) && reserve.release() {
            try compactOnce(afterWrite)
        }
    }

    /// Takes what must survive under the lock, as of the file's end then; writes and syncs
    /// the new file without the lock (writers append to the old one meanwhile); then, under
    /// the lock again, appends to it what was written to the old file since (as it is: a
    /// file followed by more lines reads as its state with those lines applied, strikes
    /// included), syncs that, renames it over the old one, syncs the directory and switches
    /// the descriptor. Every record, however recent, is in the new file when it replaces
    /// the old one, and synced: so everything appended is then durable.
    private func compactOnce(_ afterWrite: () -> Void) throws {
        // Copies on write, so taking them costs nothing here; the next change pays for it.
        let pending = ledger.snapshot, unsettled = settlements.records
        let start = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0
        let strikes = strikesSinceCompaction
        lock.unlock()
        let tmp = path + ".new"
        let written = Result {
            try Self.create(tmp, holding: JournalFormat.compacted(pending: pending, unsettled: unsettled.mapValues(\.settlement)))
        }
        afterWrite()
        lock.lock()
        let newFD = try written.get()
        do {
            // The syncer may be using the current descriptor: no new sync starts meanwhile.
            swapping = true
            while syncing { lock.wait() }
            swapping = false
            // From here the lock is not given up until the descriptor is switched.
            try copyTail(from: start, to: newFD)
            guard rename(tmp, path) == 0 else { throw StorageError.io("cannot replace \(path)", errno) }
        } catch {
            Glibc.close(newFD)
            unlink(tmp) // a partial copy must not hold on to the space it took
            throw error
        }
        // From the rename on, appends must go to the new file, whatever happens next.
        if fd >= 0 { Glibc.close(fd) }
        fd = newFD
        strikesSinceCompaction -= strikes
        try FileStore.syncDirectory((path as NSString).deletingLastPathComponent)
        synced = appended // the new file holds every record, synced
        lock.broadcast()
    }

    /// A new file at `tmp` holding `text`, synced; open for appending.
    private static func create(_ tmp: String, holding text: String) throws -> Int32 {
        let newFD = open(tmp, O_RDWR | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard newFD >= 0 else { throw StorageError.io("cannot create \(tmp)", errno) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(newFD, $0.baseAddress, $0.count) }
        // A short write sets no errno (what is there is stale): it is the disk running out.
        let code = written < 0 ? errno : written < bytes.count ? ENOSPC : fsync(newFD) == 0 ? 0 : errno
        guard code == 0 else {
            Glibc.close(newFD)
            unlink(tmp) // a partial copy must not hold on to the space it took
            throw StorageError.io("cannot write \(tmp)", code)
        }
        return newFD
    }

    /// Appends to `newFD` what the current file holds from `offset` on, and syncs it.
    /// With the lock held.
    private func copyTail(from offset: off_t, to newFD: Int32) throws {
        guard fd >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var position = offset
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, position) }
            guard count >= 0 else { throw StorageError.io("cannot read \(path)", errno) }
            if count == 0 { break }
            let written = buffer.withUnsafeBytes { write(newFD, $0.baseAddress, count) }
            guard written == count else { throw StorageError.io("cannot write \(path).new", written < 0 ? errno : ENOSPC) }
            position += off_t(count)
        }
        guard position == offset || fdatasync(newFD) == 0 else { throw StorageError.io("cannot sync \(path).new", errno) }
    }

    /// Opens the journal as it stands for appending, cut back to its last whole line (a
    /// record torn by a crash must not be glued to the next one): start-up on a disk too
    /// full for the compacted copy. Truncating needs no space.
    func reopenInPlace(keeping length: Int) throws {
        let descriptor = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
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
