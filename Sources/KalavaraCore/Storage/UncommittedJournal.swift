import Foundation
import Synchronization

/// A volume's list of value files whose commit it has not seen succeed.
///
/// A file becomes durable on a volume before the master commits it; if the commit fails,
/// or this volume is a replica that never hears the outcome, the file would linger. Each
/// such version is recorded here (durably, before its file is renamed into place) and
/// struck off when the outcome is known. The orphan sweep then only has to look at the
/// entries here that outlived the grace period, never at every file on the volume.
///
/// Format: an append-only text file of lines `+ VERSION HEXKEY UNIXTIME` and
/// `- VERSION HEXKEY`. Additions are made durable by a syncer thread that fdatasyncs
/// whatever has been appended since its last sync: writers append before they fsync their
/// value file and wait for the journal only after, so the two syncs overlap, and concurrent
/// writers share one journal sync. Strikes are not synced: a lost strike only means one
/// redundant question to the master later.
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

    public init(path: String) throws {
        self.path = path
        var loaded: [Entry: Double] = [:]
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count >= 3, let version = UInt64(fields[1]),
                      let keyBytes = Hex.decode(fields[2]), let key = try? Key(keyBytes) else { continue }
                let entry = Entry(key: key, version: version)
                if fields[0] == "+" {
                    loaded[entry] = fields.count > 3 ? Double(fields[3]) ?? 0 : 0
                } else {
                    loaded[entry] = nil
                }
            }
        }
        pending.withLock { $0 = loaded }
        fd = -1
        try rewrite()
        let syncer = Thread { [self] in syncLoop() }
        syncer.name = "journal-sync"
        syncer.start()
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Stops the syncer thread (after a last sync).
    public func close() {
        lock.lock()
        stopped = true
        lock.broadcast()
        lock.unlock()
    }

    public var count: Int { pending.withLock { $0.count } }

    /// Records a version as uncommitted and starts making that durable; returns a
    /// position to pass to `waitUntilDurable`.
    public func append(_ key: Key, version: UInt64) throws -> Int {
        let now = Date().timeIntervalSince1970
        lock.lock()
        defer { lock.unlock() }
        guard append("+ \(version) \(Hex.encode(key.bytes)) \(Int(now))\n") else {
            throw StorageError.io("journal write", errno)
        }
        pending.withLock { $0[Entry(key: key, version: version)] = now }
        appended += 1
        lock.broadcast()
        return appended
    }

    /// Returns once the addition at `position` is on disk.
    public func waitUntilDurable(_ position: Int) throws {
        lock.lock()
        defer { lock.unlock() }
        while synced < position, syncError == 0 { lock.wait() }
        if syncError != 0 { throw StorageError.io("journal fdatasync", syncError) }
    }

    private func syncLoop() {
        lock.lock()
        while true {
            while synced >= appended, !stopped { lock.wait() }
            if stopped, synced >= appended { break }
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
        lock.unlock()
    }

    /// Strikes a version off: its outcome is known (committed, refused, or its file is gone).
    public func strike(_ key: Key, version: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        let (removed, left) = pending.withLock { ($0.removeValue(forKey: Entry(key: key, version: version)) != nil, $0.count) }
        guard removed else { return }
        _ = append("- \(version) \(Hex.encode(key.bytes))\n")
        strikesSinceCompaction += 1
        if strikesSinceCompaction > 10_000 + 2 * left { try? rewriteLocked() }
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

    private func append(_ line: String) -> Bool {
        let bytes = Array(line.utf8)
        return bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count
    }

    private func rewrite() throws {
        lock.lock()
        defer { lock.unlock() }
        try rewriteLocked()
    }

    /// Replaces the file with one holding only the pending entries (tmp, fsync, rename).
    /// Called with the lock held.
    private func rewriteLocked() throws {
        while syncing { lock.wait() } // the syncer is using the current descriptor
        let tmp = path + ".new"
        var text = ""
        // Additions and strikes take `lock` too, so this copy is exactly what the file must hold.
        for (entry, time) in pending.withLock({ $0 }) { text += "+ \(entry.version) \(Hex.encode(entry.key.bytes)) \(Int(time))\n" }
        let newFD = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard newFD >= 0 else { throw StorageError.io("cannot create \(tmp)", errno) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ write(newFD, $0.baseAddress, $0.count) }) == bytes.count, fsync(newFD) == 0 else {
            Glibc.close(newFD)
            throw StorageError.io("cannot write \(tmp)", errno)
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
}
