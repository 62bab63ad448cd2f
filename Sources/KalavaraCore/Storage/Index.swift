import Foundation
import KalavaraHTTP
import KalavaraSupport
import Prometheus

/// The master's persistent state in RocksDB: key records, the volume table, the version
/// clock's reservation, and two work queues.
///
/// Key spaces:
/// - `k` + key → `IndexRecord`;
/// - `m/volumes` → the registered volume URLs (a volume's id is its position);
///   `m/version-ceiling` → no version at or above it has been handed out;
/// - `t/` + version (8 bytes, big-endian) + key → a tombstone waiting to expire, so expiry
///   visits only expired tombstones, oldest first;
/// - `r/` + volume id (2 bytes, big-endian) + key → version: that volume must remove its
///   copies of the key older than the version (superseded, deleted, or moved away while it
///   was down). Work per pass is proportional to what is pending, never to all keys.
///
/// Every change that backs an answer to a client is written synced, in one batch.
public final class Index: Sendable {
    let db: RocksDB
    /// The index's directory: its filesystem's free space is what `checkSpace` weighs.
    let path: String
    /// Free bytes writes leave on the index's filesystem (`master --index-reserve`): room
    /// for RocksDB's flushes and compactions, and for an open. See `checkSpace`.
    let reserveBytes: Int
    /// Time of each synced batch write (commits, fences, registry), when measured.
    private let syncedWrites: DurationHistogram?
    private static let keyPrefix: [UInt8] = [UInt8(ascii: "k")]
    private static let volumesKey = Array("m/volumes".utf8)
    private static let versionCeilingKey = Array("m/version-ceiling".utf8)
    private static let volumeModesKey = Array("m/volume-modes".utf8)
    private static let volumeZonesKey = Array("m/volume-zones".utf8)
    private static let repairCursorKey = Array("m/repair-cursor".utf8)
    private static let rebuildKey = Array("m/rebuild".utf8)
    private static let tombstonePrefix = Array("t/".utf8)
    private static let removalPrefix = Array("r/".utf8)

    /// Free bytes the index's filesystem must have for RocksDB to open for writing: an open
    /// writes a new log, manifest and options file, and Debian's RocksDB aborts on an
    /// assertion (`sync_without_flush_called_`) when those writes fail on a full disk,
    /// instead of returning an error. With less, an existing index opens read-only.
    static let minimumFreeBytes = 64 * 1024

    /// The block cache by default: 1 GiB, about 40 bytes of memory per key, so an index of
    /// up to some 25 million keys is read from memory after its first pass. The cache fills
    /// only as keys are read: a small index costs what it holds.
    public static let defaultCacheBytes = 1 << 30

    /// The free space writes leave by default (`--index-reserve`): room for RocksDB's own
    /// writes, which the guard cannot weigh one by one: a flush of its memtables (up to six
    /// of 16 MiB) and compactions, which write their output before they delete their input.
    /// Debian's RocksDB aborts (an assertion) when one of those meets a full disk.
    public static let defaultReserveBytes = 256 << 20

    /// `cacheBytes`: RocksDB's block cache, the most of the index kept in memory, uncompressed.
    /// On a filesystem with less than the reserve free, an existing index opens read-only:
    /// reads are served, and writes answer 507 until space comes back (see `checkSpace`);
    /// opened for writing, its first flush or compaction could meet a full disk.
    /// `keepLog`: RocksDB's log files kept that long and up to that size after they stop
    /// being needed (a master group's leader serves standbys from them).
    public init(path: String, metrics: Metrics? = nil, cacheBytes: Int = Index.defaultCacheBytes,
                reserveBytes: Int = Index.defaultReserveBytes, keepLog: (seconds: UInt64, megabytes: UInt64)? = nil) throws {
        syncedWrites = metrics?.histogram("kalavara_rocksdb_write_duration_seconds",
                                          "Time of a synced RocksDB batch write (WAL fsync included)")
        self.path = path
        self.reserveBytes = reserveBytes
        let parent = (path as NSString).deletingLastPathComponent
        let exists = FileManager.default.fileExists(atPath: path)
        let free = FileStore.freeBytes(at: exists ? path : (parent.isEmpty ? "." : parent))
        if free < Self.minimumFreeBytes, !exists {
            throw StorageError.io("cannot open index at \(path): its filesystem is full (\(free) bytes free)", ENOSPC)
        }
        let full = exists && free < max(reserveBytes, Self.minimumFreeBytes)
        do {
            db = try RocksDB(path: path, blockCacheBytes: cacheBytes, readOnly: full, keepLog: keepLog)
        } catch let failure as RocksDB.Failure {
            let why = full ? " read-only (its filesystem is full, \(free) bytes free)" : ""
            throw StorageError.corrupt("cannot open index at \(path)\(why): \(failure.description)")
        }
        if full { Log.warning("index filesystem full (\(free) bytes free, \(reserveBytes) kept in reserve): index opened read-only, writes refused until space is freed") }
    }

    public func close() { db.close() }

    /// Writes buffered records to table files (see `RocksDB.flush`).
    public func flush() throws { try db.flush() }

    /// Compacts everything into the bottom level (see `RocksDB.compact`).
    public func compact() throws { try db.compact() }

    // MARK: Reading

    /// The RocksDB key under which `key`'s record is kept.
    static func storageKey(_ key: Key) -> [UInt8] { keyPrefix + key.bytes }

    func record(for key: Key) throws -> IndexRecord? {
        guard let bytes = try db.get(Self.keyPrefix + key.bytes) else { return nil }
        guard let record = IndexRecord(decoding: bytes) else {
            throw StorageError.corrupt("index record for \(key) cannot be decoded")
        }
        return record
    }

    /// Keys starting with `prefix`, after `after`, in byte order, with their records.
    /// Keys with `prefix` after `after`, in byte order, at most `limit`; with `stopAfter`, up
    /// to the first key (raw bytes) it accepts.
    func list(prefix: [UInt8], after: [UInt8]?, limit: Int, stopAfter: (([UInt8]) -> Bool)? = nil) throws -> [(Key, IndexRecord)] {
        try db.scan(prefix: Self.keyPrefix + prefix, after: after.map { Self.keyPrefix + $0 }, limit: limit,
                stopAfter: stopAfter.map { stop in { raw in stop(Array(raw.dropFirst())) } })
            .compactMap { entry in
                guard let key = try? Key(Array(entry.key.dropFirst())),
                      let record = IndexRecord(decoding: entry.value) else { return nil }
                return (key, record)
            }
    }

    /// A page of the index in key order for a full walk: the records that decode, the last
    /// raw key read (where the next page starts) and how many rows were read, so that a
    /// damaged record can neither end a walk early nor be skipped silently.
    func walk(after: [UInt8]?, limit: Int) throws -> (records: [(Key, IndexRecord)], last: [UInt8]?, rows: Int, damaged: Int) {
        let rows = try db.scan(prefix: Self.keyPrefix, after: after.map { Self.keyPrefix + $0 }, limit: limit, cached: false)
        var records: [(Key, IndexRecord)] = []
        records.reserveCapacity(rows.count)
        for row in rows {
            if let key = try? Key(Array(row.key.dropFirst())), let record = IndexRecord(decoding: row.value) {
                records.append((key, record))
            }
        }
        return (records, rows.last.map { Array($0.key.dropFirst()) }, rows.count, rows.count - records.count)
    }

    /// RocksDB's estimate of the number of entries.
    var estimatedKeyCount: Int { Int(db.property("rocksdb.estimate-num-keys") ?? "") ?? 0 }

    /// Queued tombstones whose version is below `version`, oldest first.
    func tombstones(issuedBefore version: UInt64, limit: Int) -> [(key: Key, version: UInt64)] {
        var result: [(key: Key, version: UInt64)] = []
        for entry in (try? db.scan(prefix: Self.tombstonePrefix, after: nil, limit: limit)) ?? [] {
            let suffix = Array(entry.key.dropFirst(Self.tombstonePrefix.count))
            guard suffix.count > 8 else { continue }
            let entryVersion = suffix[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard entryVersion < version else { break }
            guard let key = try? Key(Array(suffix[8...])) else { continue }
            result.append((key, entryVersion))
        }
        return result
    }

    /// Removals waiting for `volume`: each key with the version below which copies must go.
    func pendingRemovals(volume: UInt16, limit: Int) -> [(key: Key, below: UInt64)] {
        let prefix = Self.removalPrefix + Self.bigEndian(volume)
        return ((try? db.scan(prefix: prefix, after: nil, limit: limit)) ?? []).compactMap { entry in
            guard entry.value.count == 8, let key = try? Key(Array(entry.key.dropFirst(prefix.count))) else { return nil }
            return (key, entry.value.readLittleEndian(UInt64.self, at: 0))
        }
    }

    func pendingRemoval(volume: UInt16, key: Key) throws -> UInt64? {
        guard let bytes = try db.get(Self.removalKey(volume, key)), bytes.count == 8 else { return nil }
        return bytes.readLittleEndian(UInt64.self, at: 0)
    }

    // MARK: Writing

    /// Changes applied together, durably, by `apply`.
    public struct Changes {
        fileprivate var batch = WriteBatch()
        public init() {}

        public mutating func setRecord(_ record: IndexRecord, for key: Key) {
            batch.put(Index.keyPrefix + key.bytes, record.encoded())
        }

        mutating func removeRecord(for key: Key) { batch.delete(Index.keyPrefix + key.bytes) }

        /// Queues a tombstone to be forgotten once its version has expired.
        mutating func queueExpiry(of key: Key, version: UInt64) {
            batch.put(Index.tombstoneQueueKey(version: version, key: key), [])
        }

        mutating func dropExpiry(of key: Key, version: UInt64) {
            batch.delete(Index.tombstoneQueueKey(version: version, key: key))
        }

        /// Queues the removal of `volume`'s copies of `key` older than `below`.
        mutating func queueRemoval(volume: UInt16, key: Key, below: UInt64) {
            var value: [UInt8] = []
            value.append(littleEndian: below)
            batch.put(Index.removalKey(volume, key), value)
        }

        mutating func dropRemoval(volume: UInt16, key: Key) { batch.delete(Index.removalKey(volume, key)) }
    }

    /// Queues the removal of `volume`'s copies of `key` older than `below`, keeping the
    /// higher mark if one is queued already: an entry only ever asks for more to go, so a
    /// later, smaller removal cannot hide an earlier, larger one. Call under the key's lock.
    func queueRemoval(_ changes: inout Changes, volume: UInt16, key: Key, below: UInt64) throws {
        let existing = try pendingRemoval(volume: volume, key: key) ?? 0
        changes.queueRemoval(volume: volume, key: key, below: max(existing, below))
    }

    /// Writes `changes` atomically. `durable: false` is for bookkeeping whose loss in a
    /// crash costs only a redundant retry (a removal already done, asked for again).
    public func apply(_ changes: Changes, durable: Bool = true) throws {
        guard !changes.batch.isEmpty else { return }
        guard durable, let syncedWrites else { return try write(changes.batch, sync: durable) }
        try syncedWrites.time { try write(changes.batch, sync: true) }
    }

    /// Whether writes are held off after RocksDB ran out of space, the disk fell below what
    /// a write needs, or the index was opened read-only: the next write weighs the free space
    /// and reopens it if there is room. An atomic load: every PUT and DELETE redirect asks.
    var writesHeldOff: Bool { db.writesHeldOff }

    /// Refuses (507, one line) a write of `bytes` (keys and values, attributes included)
    /// that would leave less than `reserveBytes` free on the index's filesystem. What it
    /// costs is counted twice (the log, then a table) plus a block, so that a writer cannot
    /// creep past the guard with large keys and attributes on tiny values; even with no
    /// reserve, a write never goes to RocksDB without room for itself: Debian's RocksDB aborts
    /// (`sync_without_flush_called_`) when its log write fails, in that very call. Writes held
    /// off after RocksDB failed for want of space resume here, by a reopen, once the space
    /// is back (at most one attempt every `RocksDB.reopenInterval`; meanwhile 507).
    ///
    /// A flush or compaction in the background can fail for want of space too (another
    /// process filling the disk), and RocksDB then keeps a background error that no call
    /// of ours reports. So whenever free space falls below what a write needs, writes are
    /// held off as after a failed write: the reopen that resumes them clears any such error.
    func checkSpace(forBytes bytes: Int) throws {
        let wanted = reserveBytes + 2 * bytes + 4096
        let free = FileStore.freeBytes(at: path)
        if db.writesHeldOff {
            guard free >= wanted + Self.minimumFreeBytes else {
                throw Self.noSpace("\(free) bytes free on the index's disk, \(reserveBytes) kept in reserve (--index-reserve)")
            }
            do {
                try db.reopen()
                Log.info("index reopened for writing (\(free) bytes free on its disk)")
            } catch {
                throw Self.noSpace("the index's disk filled up and it cannot be reopened yet (\(error))")
            }
        }
        guard free >= wanted else {
            db.holdOffWrites("the index's disk fell below its reserve (\(free) bytes free)")
            throw Self.noSpace("\(free) bytes free on the index's disk, \(reserveBytes) kept in reserve (--index-reserve)")
        }
    }

    private static func noSpace(_ why: String) -> HTTPError {
        HTTPError(507, "index disk full: \(why); writes are refused until space is freed")
    }

    /// Every write of the index: weighed against the free space first (`checkSpace`), and a
    /// RocksDB failure for want of space answered as one (507).
    private func write(_ batch: WriteBatch, sync: Bool) throws {
        try checkSpace(forBytes: batch.byteCount)
        do {
            try db.write(batch, sync: sync)
        } catch let failure as RocksDB.Failure where failure.isNoSpace {
            Log.error("index write failed for want of space: writes refused until space is freed (\(failure))")
            throw Self.noSpace("the index's disk filled up")
        }
    }

    /// Sets `key` to `value`, or removes it for nil: one write of the cluster state.
    private func change(_ key: [UInt8], to value: [UInt8]?, sync: Bool) throws {
        var batch = WriteBatch()
        if let value { batch.put(key, value) } else { batch.delete(key) }
        try write(batch, sync: sync)
    }

    // MARK: Cluster state

    public func volumeURLs() throws -> [String] {
        guard let bytes = try db.get(Self.volumesKey) else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    public func setVolumeURLs(_ urls: [String]) throws {
        try change(Self.volumesKey, to: Array(urls.joined(separator: "\n").utf8), sync: true)
    }

    /// Volumes being drained or removed: `URL MODE` lines.
    func volumeModes() throws -> [String: String] { try urlTable(Self.volumeModesKey) }

    func setVolumeModes(_ modes: [String: String]) throws { try setURLTable(Self.volumeModesKey, modes) }

    /// Volumes outside the default zone: `URL ZONE` lines.
    func volumeZones() throws -> [String: String] { try urlTable(Self.volumeZonesKey) }

    func setVolumeZones(_ zones: [String: String]) throws { try setURLTable(Self.volumeZonesKey, zones) }

    /// A table of one word per volume URL, kept as `URL WORD` lines under `key`.
    private func urlTable(_ key: [UInt8]) throws -> [String: String] {
        guard let bytes = try db.get(key) else { return [:] }
        var table: [String: String] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2 { table[String(parts[0])] = String(parts[1]) }
        }
        return table
    }

    private func setURLTable(_ key: [UInt8], _ table: [String: String]) throws {
        let text = table.sorted(by: { $0.key < $1.key }).map { "\($0.key) \($0.value)" }.joined(separator: "\n")
        try change(key, to: Array(text.utf8), sync: true)
    }

    /// Where the placement reconciler's pass stands: the last key it finished, so a
    /// restarted master resumes there. Not synced: losing it repeats a little work.
    func repairCursor() throws -> [UInt8]? { try db.get(Self.repairCursorKey) }

    func setRepairCursor(_ key: [UInt8]?) throws {
        try change(Self.repairCursorKey, to: key, sync: false)
    }

    /// Whether an index rebuild was started and has not finished (a restarted master resumes it).
    func rebuildPending() throws -> Bool { try db.get(Self.rebuildKey) != nil }

    func setRebuildPending(_ pending: Bool) throws {
        try change(Self.rebuildKey, to: pending ? [1] : nil, sync: true)
    }

    func versionCeiling() throws -> UInt64 {
        guard let bytes = try db.get(Self.versionCeilingKey), bytes.count == 8 else { return 0 }
        return bytes.readLittleEndian(UInt64.self, at: 0)
    }

    func setVersionCeiling(_ ceiling: UInt64) throws {
        var bytes: [UInt8] = []
        bytes.append(littleEndian: ceiling)
        try change(Self.versionCeilingKey, to: bytes, sync: true)
    }

    // MARK: Key layout

    private static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).reversed().map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    fileprivate static func tombstoneQueueKey(version: UInt64, key: Key) -> [UInt8] {
        tombstonePrefix + bigEndian(version) + key.bytes
    }

    fileprivate static func removalKey(_ volume: UInt16, _ key: Key) -> [UInt8] {
        removalPrefix + bigEndian(volume) + key.bytes
    }
}

extension Index {
    /// Writes a key's record, durably (a single-change `apply`).
    func setRecord(_ record: IndexRecord, for key: Key) throws {
        var changes = Changes()
        changes.setRecord(record, for: key)
        try apply(changes)
    }
}
