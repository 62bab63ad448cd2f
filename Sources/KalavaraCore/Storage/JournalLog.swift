import Foundation
import KalavaraSupport
import Prometheus

/// The uncommitted journal's file: it makes each change of the ledger durable, and is the
/// durable copy of small values until a checkpoint. Appends, group syncs, settlements;
/// checkpoints and compaction are in `JournalLog+Checkpoints` and `JournalLog+Compaction`,
/// the lines in `JournalFormat`.
///
/// Each version is recorded here (durably, before its file is renamed into place) and
/// struck off when the outcome is known. A plain addition (a value that will be fsynced)
/// is made durable by a syncer thread woken at once, so that its sync overlaps the value
/// file's fsync; other records are synced by whoever waits for them first (see
/// `waitUntilDurable`). Each sync covers whatever has been appended so far, so concurrent
/// writers share it. Strikes are not synced: a lost strike only means one redundant
/// question to the master later.
///
/// The journal is also the durable copy of small values until a checkpoint (see
/// `appendLogged`): an addition may carry the value's bytes, and a removal of a file is
/// recorded before the file goes. Such a value's file is written and renamed without fsync
/// and its directory is not synced; after a crash, start-up puts back from here every such
/// file that did not survive whole (and removes again any recorded removal that did not),
/// see `FileStore.replay`. Once a second, a checkpoint `syncfs`es the data's filesystem,
/// after which those files are as durable as if each had been fsynced, and the records
/// drop out. One shared journal sync thus replaces a write's two fsyncs (file and
/// directory) and a removal's directory fsync.
///
/// A full disk must not stop the journal from recording removals or rewriting itself, or
/// no space could ever be freed: it keeps room for that in a `SpaceReserve`, which those
/// writes (never a new value's) release when they find the disk full.
///
/// `lock` orders the file's writes, syncs, checkpoints and compactions, and only writers
/// take it; the ledger is changed under it too, so that the file and the ledger change in
/// one order (a compaction copies both at once).
final class JournalLog: @unchecked Sendable {
    typealias Entry = UncommittedJournal.Entry
    typealias Settlement = UncommittedJournal.Settlement

    let path: String
    /// Room kept for removals and compactions on a full disk (see `SpaceReserve`).
    let reserve: SpaceReserve
    /// What this file records the changes of.
    let ledger: UncommittedLedger
    /// Guards everything below: the file, its sync state and the settlements.
    let lock = NSCondition()
    var fd: Int32 = -1
    var appended = 0 // records written, for group sync
    var synced = 0
    var syncError: Int32 = 0
    var stopped = false
    /// True while a sync runs fdatasync outside the lock: the descriptor must not be
    /// closed (and its number reused) until it is done.
    var syncing = false
    /// True while a compaction waits to swap the descriptor: no new sync starts on the old one.
    var swapping = false
    /// True while a compaction runs (one at a time; see `JournalLog+Compaction`).
    var compacting = false
    var strikesSinceCompaction = 0
    var settlements: JournalSettlements
    /// True while a checkpoint waits for `settlements.inFlight` (only then does `applied` wake anyone).
    var checkpointWaiting = false
    /// The syncer sleeps on `syncerWake` while `syncerIdle`.
    private var syncerIdle = false
    private let syncerWake = DispatchSemaphore(value: 0)
    /// The directory whose filesystem a checkpoint syncs (set by `startCheckpoints`).
    var checkpointFD: Int32 = -1
    /// The checkpoints' loop, once `startCheckpoints` started it.
    var checkpoints: BackgroundLoop<Double>?
    var syncfsTimes: DurationHistogram?
    /// Set by a checkpoint whose syncfs failed (see `checkpoint`).
    var syncfsFailed = false

    /// Opens the journal at `path`, which holds `contents` (what the ledger was loaded
    /// from), and rewrites it compacted.
    init(path: String, contents: JournalFormat.Contents, ledger: UncommittedLedger, reserveBytes: Int?) throws {
        self.path = path
        self.ledger = ledger
        let directory = (path as NSString).deletingLastPathComponent
        reserve = SpaceReserve(path: path + ".reserve", bytes: reserveBytes ?? SpaceReserve.bytes(forDiskAt: directory))
        settlements = JournalSettlements(contents.settlements)
        do {
            try compact()
        } catch where SpaceReserve.isFull(error) {
            // A disk full to the last block and no reserve to give back (it was released
            // before a crash): start on the file as it is, so reads and deletes are served.
            try reopenInPlace(keeping: contents.wholeLines)
            Log.warning("disk full: the journal is kept uncompacted until space returns")
        }
        reserve.refill()
        let syncer = Thread { [self] in syncLoop() }
        syncer.name = "journal-sync"
        syncer.start()
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Stops the syncer thread (after a last sync) and the checkpoints; a compaction under
    /// way finishes first.
    func close() {
        lock.lock()
        stopped = true
        wakeSyncer()
        lock.broadcast()
        while compacting { lock.wait() }
        let checkpoints = checkpoints
        lock.unlock()
        checkpoints?.stop()
    }

    /// Wakes the syncer if it sleeps. Called with the lock held.
    private func wakeSyncer() {
        guard syncerIdle else { return }
        syncerIdle = false
        syncerWake.signal()
    }

    /// Records a version as uncommitted and starts making that durable.
    func append(_ entry: Entry) throws -> Int {
        let now = Date().timeIntervalSince1970
        lock.lock()
        defer { lock.unlock() }
        guard append(JournalFormat.additionLine(entry, time: now)) else { throw StorageError.io("journal write", errno) }
        ledger.record(entry, at: now)
        appended += 1
        settlements.forget(entry) // this version's file will be fsynced: an earlier removal record must not undo it
        wakeSyncer()
        return appended
    }

    /// Records a version as uncommitted together with its bytes; nil when the checkpoint
    /// has fallen behind (see `UncommittedJournal.appendLogged`).
    func appendLogged(_ entry: Entry, value: [UInt8], crc: UInt32) throws -> Int? {
        let now = Date().timeIntervalSince1970
        lock.lock()
        defer { lock.unlock() }
        guard checkpointFD >= 0, !syncfsFailed, settlements.valueBytes + value.count <= UncommittedJournal.unsettledCap else { return nil }
        guard append(JournalFormat.valueLine(entry, time: now, value: value, crc: crc)) else { throw StorageError.io("journal write", errno) }
        ledger.record(entry, at: now)
        appended += 1
        settlements.settle(entry, .value(value, crc: crc), at: appended)
        settlements.inFlight.insert(appended)
        return appended
    }

    /// Journals the removal of these versions' files, waits until that is durable, runs
    /// `remove`, and only then lets a checkpoint pass them (see `UncommittedJournal.removing`).
    func removing<T>(_ entries: [Entry], _ remove: (_ durably: Bool) throws -> T) throws -> T {
        lock.lock()
        var positions: [Int] = []
        defer {
            lock.lock()
            positions.forEach { settlements.inFlight.remove($0) }
            if checkpointWaiting { lock.broadcast() }
            lock.unlock()
        }
        // Which files the journal holds a copy of, noted before their removals are recorded
        // (recording one settles it `.removed`, which hides the copy).
        let copies = entries.map { settlements.holdsValue($0) }
        for (number, entry) in entries.enumerated() {
            guard append(JournalFormat.removalLine(entry), freeing: true) else {
                let code = errno
                // A copy behind a recorded removal stays removed at start-up once that
                // record is durable; one behind no record would come back.
                let copiesUnrecorded = copies[number...].contains(true)
                lock.unlock()
                guard code == ENOSPC || code == EDQUOT, !copiesUnrecorded else { throw StorageError.io("journal write", code) }
                if let last = positions.last { try waitUntilDurable(last) }
                return try remove(true)
            }
            appended += 1
            settlements.settle(entry, .removed, at: appended)
            settlements.inFlight.insert(appended)
            positions.append(appended)
        }
        lock.unlock()
        if let last = positions.last { try waitUntilDurable(last) }
        let result = try remove(false)
        if !reserve.isHeld { reserve.refill() } // the space just freed may be enough
        return result
    }

    /// The file operation recorded at `position` is done (or will not happen).
    func applied(_ position: Int) {
        lock.lock()
        settlements.inFlight.remove(position)
        if checkpointWaiting { lock.broadcast() }
        lock.unlock()
    }

    /// A logged write that failed before its file was in place: start-up must not put it
    /// back. Not synced (a file put back for it would only be an orphan the sweep drops).
    func cancelLogged(_ entry: Entry) {
        lock.lock()
        defer { lock.unlock() }
        guard settlements.holdsValue(entry) else { return }
        _ = append(JournalFormat.removalLine(entry), freeing: true)
        settlements.settle(entry, .removed, at: appended)
    }

    /// Strikes a version off: its outcome is known (committed, refused, or its file is gone).
    func strike(_ entry: Entry) {
        lock.lock()
        defer { lock.unlock() }
        guard let left = ledger.strike(entry) else { return }
        _ = append(JournalFormat.strikeLine(entry), freeing: true)
        strikesSinceCompaction += 1
        if strikesSinceCompaction > 10_000 + 2 * left, !stopped, !compacting { try? compactLocked() }
    }

    /// Reads the log's state under its lock.
    func locked<T>(_ body: (JournalLog) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(self)
    }

    // MARK: Syncing

    /// Returns once the record at `position` is on disk.
    /// A waiter that finds no sync running runs one itself, for everything appended so
    /// far (the others wait for it): a logged write or a removal wakes no other thread to
    /// sync for it. (A plain addition wakes the syncer at once instead, so that its sync
    /// overlaps the value file's fsync.)
    func waitUntilDurable(_ position: Int) throws {
        lock.lock()
        defer { lock.unlock() }
        while synced < position, syncError == 0 {
            if syncing || swapping {
                lock.wait()
            } else {
                syncLocked()
            }
        }
        if syncError != 0 { throw StorageError.io("journal fdatasync", syncError) }
    }

    /// One fdatasync of everything appended so far, run outside the lock. Called with the
    /// lock held and no sync running.
    private func syncLocked() {
        let target = appended, descriptor = fd
        syncing = true
        lock.unlock()
        let failed = fdatasync(descriptor) != 0 ? errno : 0
        lock.lock()
        syncing = false
        if failed != 0 { syncError = failed }
        synced = max(synced, target)
        lock.broadcast()
    }

    private func syncLoop() {
        lock.lock()
        while true {
            while synced >= appended, !stopped {
                // Writers wake this thread through the semaphore, not the condition, so a
                // journal write never wakes the threads waiting for a sync.
                syncerIdle = true
                lock.unlock()
                syncerWake.wait()
                lock.lock()
            }
            if stopped, synced >= appended { break }
            if syncing || swapping {
                lock.wait() // a waiter's sync may cover what this thread was woken for; a swap syncs all
                continue
            }
            syncLocked()
        }
        lock.unlock()
    }

    // MARK: File

    /// Appends one record. A record that frees space (`freeing`: a removal, a strike) that
    /// finds the disk full releases the reserve and is tried once more.
    private func append(_ line: String, freeing: Bool = false) -> Bool {
        if appendOnce(line) { return true }
        let code = errno
        guard freeing, code == ENOSPC || code == EDQUOT, reserve.release() else {
            errno = code // not the reserve's unlink's
            return false
        }
        return appendOnce(line)
    }

    private func appendOnce(_ line: String) -> Bool {
        let bytes = Array(line.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written == bytes.count { return true }
        // A short write (a full disk) must not leave half a line for the next record to be
        // glued to: that record would be misread, or lost, at the next start.
        if written > 0 {
            let end = lseek(fd, 0, SEEK_END)
            if end >= written { _ = ftruncate(fd, end - off_t(written)) }
            // A short write sets no errno (what is there is stale): it is the disk running out.
            errno = ENOSPC
        }
        return false
    }
}
