import CEpoll
import Foundation
import KalavaraHTTP
import KalavaraSupport
import Prometheus
import Synchronization

/// A volume's list of value files whose commit it has not seen succeed.
///
/// A file becomes durable on a volume before the master commits it; if the commit fails,
/// or this volume is a replica that never hears the outcome, the file would linger. Each
/// such version is recorded here (durably, before its file is renamed into place) and
/// struck off when the outcome is known. The orphan sweep then only has to look at the
/// entries here that outlived the grace period, never at every file on the volume.
///
/// The file's format is `JournalFormat`'s. A plain addition (a value that will be fsynced)
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
/// Two locks, so that a reader never waits on the disk: `pending` (what GETs ask about)
/// sits in a mutex held only for dictionary operations; `lock` orders the file's writes,
/// syncs and compactions, and only writers take it.
public final class UncommittedJournal: @unchecked Sendable {
    /// One uncommitted version of one key.
    public struct Entry: Hashable, Sendable {
        public let key: Key
        public let version: UInt64
    }

    private let path: String
    /// Room kept for removals and compactions on a full disk (see `SpaceReserve`).
    let reserve: SpaceReserve
    /// Entry → when it was recorded (seconds since 1970).
    private let pending = Mutex<[Entry: Double]>([:])
    /// Guards everything below: the file and its sync state.
    private let lock = NSCondition()
    private var fd: Int32
    private var appended = 0 // additions written, for group sync
    private var synced = 0
    private var syncError: Int32 = 0
    private var stopped = false
    /// True while the syncer runs fdatasync outside the lock: the descriptor must not be
    /// closed (and its number reused) until it is done.
    private var syncing = false
    private var strikesSinceCompaction = 0

    /// What a start-up must make true of a file, recorded since the last checkpoint.
    public enum Settlement: Equatable, Sendable {
        /// The file must hold this value (its CRC-32 given).
        case value([UInt8], crc: UInt32)
        /// The file must be gone.
        case removed
    }
    /// Records since the last checkpoint, with the position of each; under `lock`.
    private var unsettled: [Entry: (position: Int, settlement: Settlement)] = [:]
    private var unsettledBytes = 0
    /// Positions whose file operation (the rename, the removal) is not done yet: a
    /// checkpoint must wait for them before its syncfs covers them.
    private var inFlight = Set<Int>()
    /// True while a checkpoint waits for `inFlight` (only then does `applied` wake anyone).
    private var checkpointWaiting = false
    /// The syncer sleeps on `syncerWake` while `syncerIdle`.
    private var syncerIdle = false
    private let syncerWake = DispatchSemaphore(value: 0)
    /// The directory whose filesystem a checkpoint syncs (set by `startCheckpoints`).
    private var checkpointFD: Int32 = -1
    private var syncfsTimes: DurationHistogram?
    /// Set by a checkpoint whose syncfs failed (see `checkpoint`).
    private var syncfsFailed = false
    /// Values up to this size go into the journal; unsettled bytes past `unsettledCap`
    /// (a checkpoint that cannot keep up) send writes back to fsyncing their files.
    public static let loggedValueBytes = 16 * 1024
    static let unsettledCap = 32 << 20
    /// Seconds between checkpoints while anything is unsettled, by default.
    public static let checkpointInterval = 1.0

    /// `reserveBytes`: the room kept for a full disk; by default sized for the disk.
    public init(path: String, reserveBytes: Int? = nil) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        reserve = SpaceReserve(path: path + ".reserve", bytes: reserveBytes ?? SpaceReserve.bytes(forDiskAt: directory))
        let contents = JournalFormat.read(path)
        pending.withLock { $0 = contents.pending }
        for (entry, settlement) in contents.settlements {
            unsettled[entry] = (0, settlement)
            if case .value(let bytes, _) = settlement { unsettledBytes += bytes.count }
        }
        fd = -1
        do {
            try rewrite()
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

    /// Stops the syncer thread (after a last sync).
    public func close() {
        lock.lock()
        stopped = true
        wakeSyncer()
        lock.broadcast()
        lock.unlock()
    }

    /// Wakes the syncer if it sleeps. Called with the lock held.
    private func wakeSyncer() {
        guard syncerIdle else { return }
        syncerIdle = false
        syncerWake.signal()
    }

    public var count: Int { pending.withLock { $0.count } }

    /// Records a version as uncommitted and starts making that durable; returns a
    /// position to pass to `waitUntilDurable`.
    public func append(_ key: Key, version: UInt64) throws -> Int {
        let now = Date().timeIntervalSince1970
        let entry = Entry(key: key, version: version)
        lock.lock()
        defer { lock.unlock() }
        guard append(JournalFormat.additionLine(entry, time: now)) else { throw StorageError.io("journal write", errno) }
        pending.withLock { $0[entry] = now }
        appended += 1
        forget(entry) // this version's file will be fsynced: an earlier removal record must not undo it
        wakeSyncer()
        return appended
    }

    /// Records a version as uncommitted together with its bytes, which then need no fsync
    /// of their file or directory: until the next checkpoint, the journal is their durable
    /// copy. Nil when the checkpoint has fallen behind (the caller fsyncs as usual). The
    /// caller must pass the position to `applied` once its file is renamed into place (or
    /// the write failed).
    public func appendLogged(_ key: Key, version: UInt64, value: [UInt8], crc: UInt32) throws -> Int? {
        let now = Date().timeIntervalSince1970
        lock.lock()
        defer { lock.unlock() }
        guard checkpointFD >= 0, !syncfsFailed, unsettledBytes + value.count <= Self.unsettledCap else { return nil }
        let entry = Entry(key: key, version: version)
        guard append(JournalFormat.valueLine(entry, time: now, value: value, crc: crc)) else { throw StorageError.io("journal write", errno) }
        pending.withLock { $0[entry] = now }
        appended += 1
        settle(entry, .value(value, crc: crc))
        inFlight.insert(appended)
        return appended
    }

    /// Journals the removal of these versions' files, waits until that is durable, runs
    /// `remove` (which takes the files away: no directory fsync is needed for it, the next
    /// checkpoint's syncfs covers it), and only then lets a checkpoint pass them. A start-up
    /// after a crash removes them again, so no file the journal holds a copy of comes back.
    ///
    /// On a disk so full that not even a record fits (no reserve left to give back), files
    /// the journal holds no copy of still go, unrecorded: no start-up would put them back
    /// (nor those whose removal records fitted, once they are durable), and `remove` is told (`durably`) to sync their directory itself. Deleting is how a
    /// full disk gets its space back, so it must not need space first.
    public func removing<T>(_ entries: [Entry], _ remove: (_ durably: Bool) throws -> T) throws -> T {
        lock.lock()
        var positions: [Int] = []
        defer {
            lock.lock()
            positions.forEach { inFlight.remove($0) }
            if checkpointWaiting { lock.broadcast() }
            lock.unlock()
        }
        // Which files the journal holds a copy of, noted before their removals are recorded
        // (recording one settles it `.removed`, which hides the copy).
        let copies = entries.map { if case .value? = unsettled[$0]?.settlement { true } else { false } }
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
            settle(entry, .removed)
            inFlight.insert(appended)
            positions.append(appended)
        }
        lock.unlock()
        if let last = positions.last { try waitUntilDurable(last) }
        let result = try remove(false)
        if !reserve.isHeld { reserve.refill() } // the space just freed may be enough
        return result
    }

    /// The file operation recorded at `position` is done (or will not happen).
    public func applied(_ position: Int) {
        lock.lock()
        inFlight.remove(position)
        if checkpointWaiting { lock.broadcast() }
        lock.unlock()
    }

    /// A logged write that failed before its file was in place: start-up must not put it
    /// back. Not synced (a file put back for it would only be an orphan the sweep drops).
    public func cancelLogged(_ key: Key, version: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        let entry = Entry(key: key, version: version)
        guard case .value? = unsettled[entry]?.settlement else { return }
        _ = append(JournalFormat.removalLine(entry), freeing: true)
        settle(entry, .removed)
    }

    /// Whether every record appended so far is on disk (for tests).
    var isDurable: Bool {
        lock.lock()
        defer { lock.unlock() }
        return synced >= appended
    }

    /// Whether the journal holds the bytes of this version as its durable copy now.
    public func holdsValue(_ key: Key, version: UInt64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if case .value? = unsettled[Entry(key: key, version: version)]?.settlement { return true }
        return false
    }

    /// What start-up must make true of the files, as loaded from the journal.
    public var unsettledRecords: [(entry: Entry, settlement: Settlement)] {
        lock.lock()
        defer { lock.unlock() }
        return unsettled.map { ($0.key, $0.value.settlement) }
    }

    /// Bytes of values whose only durable copy is the journal now (for tests and metrics).
    public var unsettledValueBytes: Int {
        lock.lock()
        defer { lock.unlock() }
        return unsettledBytes
    }

    /// Records what start-up must make true of this version's file. With the lock held.
    private func settle(_ entry: Entry, _ settlement: Settlement?) {
        if case .value(let bytes, _)? = unsettled[entry]?.settlement { unsettledBytes -= bytes.count }
        if case .value(let bytes, _)? = settlement { unsettledBytes += bytes.count }
        unsettled[entry] = settlement.map { (appended, $0) }
    }

    /// Nothing is left for start-up to do about this version's file. With the lock held.
    private func forget(_ entry: Entry) { settle(entry, nil) }

    /// Starts checkpointing: every `interval` seconds while records are unsettled, waits
    /// for their file operations, syncs the filesystem holding `directory`, and rewrites
    /// the journal without them. Until this is called, `appendLogged` declines.
    public func startCheckpoints(syncing directory: String, every interval: Double = checkpointInterval,
                                 measuredBy histogram: DurationHistogram? = nil) throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StorageError.io("cannot open \(directory)", errno) }
        lock.lock()
        checkpointFD = fd
        syncfsTimes = histogram
        lock.unlock()
        let thread = Thread { [self] in
            var last = monotonicSeconds()
            while true {
                // Woken at least once a second: a reserve given back is taken again as soon
                // as space returns (read-and-delete mode ends by itself).
                Thread.sleep(forTimeInterval: min(interval, 1))
                lock.lock()
                let stop = stopped
                lock.unlock()
                if stop { return }
                if monotonicSeconds() - last >= interval {
                    last = monotonicSeconds()
                    try? checkpoint()
                }
                if !reserve.isHeld { reserve.refill() }
            }
        }
        thread.name = "journal-checkpoint"
        thread.start()
    }

    /// Makes every file operation recorded so far durable by syncing the filesystem, then
    /// drops their records from the journal.
    public func checkpoint() throws {
        lock.lock()
        guard checkpointFD >= 0, !unsettled.isEmpty, !stopped, !syncfsFailed else {
            lock.unlock()
            return
        }
        let target = appended
        // A rename or removal in flight now is done within moments of its journal sync.
        checkpointWaiting = true
        while inFlight.contains(where: { $0 <= target }), !stopped { _ = lock.wait(until: Date(timeIntervalSinceNow: 0.1)) }
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
        for (entry, record) in unsettled where record.position <= target { forget(entry) }
        try rewriteLocked()
    }

    /// Returns once the addition at `position` is on disk.
    /// A waiter that finds no sync running runs one itself, for everything appended so
    /// far (the others wait for it): a logged write or a removal wakes no other thread to
    /// sync for it. (A plain addition wakes the syncer at once instead, so that its sync
    /// overlaps the value file's fsync.)
    public func waitUntilDurable(_ position: Int) throws {
        lock.lock()
        defer { lock.unlock() }
        while synced < position, syncError == 0 {
            if syncing {
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
            if syncing {
                lock.wait() // a waiter's sync; it may cover what this thread was woken for
                continue
            }
            syncLocked()
        }
        lock.unlock()
    }

    /// Strikes a version off: its outcome is known (committed, refused, or its file is gone).
    public func strike(_ key: Key, version: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        let (removed, left) = pending.withLock { ($0.removeValue(forKey: Entry(key: key, version: version)) != nil, $0.count) }
        guard removed else { return }
        _ = append(JournalFormat.strikeLine(Entry(key: key, version: version)), freeing: true)
        strikesSinceCompaction += 1
        if strikesSinceCompaction > 10_000 + 2 * left, !stopped { try? rewriteLocked() }
    }

    /// Whether this version of `key` is still waiting for its commit's outcome.
    public func isPending(_ key: Key, version: UInt64) -> Bool {
        pending.withLock { $0[Entry(key: key, version: version)] != nil }
    }

    /// Entries recorded before `time` (seconds since 1970), oldest first.
    public func entries(olderThan time: Double, limit: Int) -> [Entry] {
        pending.withLock { $0 }.filter { $0.value < time }.sorted { $0.value < $1.value }.prefix(limit).map(\.key)
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

    private func rewrite() throws {
        lock.lock()
        defer { lock.unlock() }
        try rewriteLocked()
    }

    /// Replaces the file with one holding only the pending entries (tmp, fsync, rename).
    /// Called with the lock held. On a full disk, the reserve is released and it is tried
    /// once more: a compaction is what lets a start-up or a checkpoint go on.
    private func rewriteLocked() throws {
        do {
            try rewriteOnce()
        } catch where SpaceReserve.isFull(error) && reserve.release() {
            try rewriteOnce()
        }
    }

    private func rewriteOnce() throws {
        while syncing { lock.wait() } // the syncer is using the current descriptor
        let tmp = path + ".new"
        // Additions and strikes take `lock` too, so this copy is exactly what the file must hold.
        let text = JournalFormat.compacted(pending: pending.withLock { $0 }, unsettled: unsettled.mapValues(\.settlement))
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
    private func reopenInPlace(keeping length: Int) throws {
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
