import Foundation
import Prometheus

/// A volume's list of value files whose commit it has not seen succeed.
///
/// A file becomes durable on a volume before the master commits it; if the commit fails,
/// or this volume is a replica that never hears the outcome, the file would linger. Each
/// such version is recorded here (durably, before its file is renamed into place) and
/// struck off when the outcome is known. The orphan sweep then only has to look at the
/// entries here that outlived the grace period, never at every file on the volume. The
/// journal is also the durable copy of small values until a checkpoint.
///
/// Two parts, each with a lock of its own, so that a reader never waits on the disk: the
/// ledger (`UncommittedLedger`: which versions are pending, and since when; what GETs and
/// the orphan sweep ask about) and the log (`JournalLog`: the file, its syncs, checkpoints
/// and compactions, and what start-up must make true of files after a crash). Every change
/// goes through the log, which makes it in the ledger under its own lock; questions about
/// pending versions go to the ledger alone. The format is `JournalFormat`'s.
public final class UncommittedJournal: Sendable {
    /// One uncommitted version of one key.
    public struct Entry: Hashable, Sendable {
        let key: Key
        let version: UInt64
    }

    /// What a start-up must make true of a file, recorded since the last checkpoint.
    public enum Settlement: Equatable, Sendable {
        /// The file must hold this value (its CRC-32 given).
        case value([UInt8], crc: UInt32)
        /// The file must be gone.
        case removed
    }

    /// Values up to this size go into the journal; unsettled bytes past `unsettledCap`
    /// (a checkpoint that cannot keep up) send writes back to fsyncing their files.
    static let loggedValueBytes = 16 * 1024
    static let unsettledCap = 32 << 20
    /// Seconds between checkpoints while anything is unsettled, by default.
    static let checkpointInterval = 1.0

    let ledger: UncommittedLedger
    let log: JournalLog
    /// Room kept for removals and compactions on a full disk (see `SpaceReserve`).
    var reserve: SpaceReserve { log.reserve }

    /// `reserveBytes`: the room kept for a full disk; by default sized for the disk.
    init(path: String, reserveBytes: Int? = nil) throws {
        let contents = JournalFormat.read(path)
        ledger = UncommittedLedger(contents.pending)
        log = try JournalLog(path: path, contents: contents, ledger: ledger, reserveBytes: reserveBytes)
    }

    /// Stops the syncer thread (after a last sync) and the checkpoints.
    func close() { log.close() }

    // MARK: Changes, through the log

    /// Records a version as uncommitted and starts making that durable; returns a
    /// position to pass to `waitUntilDurable`.
    func append(_ key: Key, version: UInt64) throws -> Int {
        try log.append(Entry(key: key, version: version))
    }

    /// Records a version as uncommitted together with its bytes, which then need no fsync
    /// of their file or directory: until the next checkpoint, the journal is their durable
    /// copy. Nil when the checkpoint has fallen behind (the caller fsyncs as usual). The
    /// caller must pass the position to `applied` once its file is renamed into place (or
    /// the write failed).
    func appendLogged(_ key: Key, version: UInt64, value: [UInt8], crc: UInt32) throws -> Int? {
        try log.appendLogged(Entry(key: key, version: version), value: value, crc: crc)
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
    func removing<T>(_ entries: [Entry], _ remove: (_ durably: Bool) throws -> T) throws -> T {
        try log.removing(entries, remove)
    }

    /// The file operation recorded at `position` is done (or will not happen).
    func applied(_ position: Int) { log.applied(position) }

    /// A logged write that failed before its file was in place: start-up must not put it
    /// back. Not synced (a file put back for it would only be an orphan the sweep drops).
    func cancelLogged(_ key: Key, version: UInt64) { log.cancelLogged(Entry(key: key, version: version)) }

    /// Strikes a version off: its outcome is known (committed, refused, or its file is gone).
    func strike(_ key: Key, version: UInt64) { log.strike(Entry(key: key, version: version)) }

    /// Returns once the record at `position` is on disk (see `JournalLog.waitUntilDurable`).
    func waitUntilDurable(_ position: Int) throws { try log.waitUntilDurable(position) }

    /// Starts checkpointing: every `interval` seconds while records are unsettled, waits
    /// for their file operations, syncs the filesystem holding `directory`, and rewrites
    /// the journal without them. Until this is called, `appendLogged` declines.
    func startCheckpoints(syncing directory: String, every interval: Double = checkpointInterval,
                                 measuredBy histogram: DurationHistogram? = nil) throws {
        try log.startCheckpoints(syncing: directory, every: interval, measuredBy: histogram)
    }

    /// Makes every file operation recorded so far durable by syncing the filesystem, then
    /// drops their records from the journal.
    func checkpoint() throws { try log.checkpoint() }

    // MARK: Questions

    var count: Int { ledger.count }

    /// Whether this version of `key` is still waiting for its commit's outcome.
    func isPending(_ key: Key, version: UInt64) -> Bool { ledger.isPending(Entry(key: key, version: version)) }

    /// Entries recorded before `time` (seconds since 1970), oldest first.
    func entries(olderThan time: Double, limit: Int) -> [Entry] { ledger.entries(olderThan: time, limit: limit) }

    /// Whether the journal holds the bytes of this version as its durable copy now.
    func holdsValue(_ key: Key, version: UInt64) -> Bool {
        log.locked { $0.settlements.holdsValue(Entry(key: key, version: version)) }
    }

    /// What start-up must make true of the files, as loaded from the journal.
    var unsettledRecords: [(entry: Entry, settlement: Settlement)] {
        log.locked { $0.settlements.records.map { ($0.key, $0.value.settlement) } }
    }

    /// Bytes of values whose only durable copy is the journal now (for tests and metrics).
    var unsettledValueBytes: Int { log.locked { $0.settlements.valueBytes } }

    /// Whether every record appended so far is on disk (for tests).
    var isDurable: Bool { log.locked { $0.synced >= $0.appended } }
}
