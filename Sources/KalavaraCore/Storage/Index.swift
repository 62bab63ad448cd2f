import Foundation

/// The master's persistent state in RocksDB: key records, the volume table and the
/// version clock's reservation.
///
/// Key spaces: `k` + key bytes → `IndexRecord`; `m/volumes` → the registered volume URLs
/// (a volume's id is its position); `m/version-ceiling` → no version at or above it has
/// been handed out; `t/` + version (8 bytes, big-endian) + key → a tombstone waiting to
/// expire, so expiry visits only expired tombstones, in version order, never every key.
/// Every write that acknowledges something to a client is synced.
public final class Index {
    private let db: RocksDB
    private static let keyPrefix: [UInt8] = [UInt8(ascii: "k")]
    private static let volumesKey = Array("m/volumes".utf8)
    private static let versionCeilingKey = Array("m/version-ceiling".utf8)
    private static let tombstonePrefix = Array("t/".utf8)

    public init(path: String) throws {
        do {
            db = try RocksDB(path: path)
        } catch let failure as RocksDB.Failure {
            throw StorageError.corrupt("cannot open index at \(path): \(failure.description)")
        }
    }

    public func close() { db.close() }

    // MARK: Keys

    public func record(for key: Key) throws -> IndexRecord? {
        guard let bytes = try db.get(Self.keyPrefix + key.bytes) else { return nil }
        guard let record = IndexRecord(decoding: bytes) else {
            throw StorageError.corrupt("index record for \(key) cannot be decoded")
        }
        return record
    }

    /// Writes a key's record, durably.
    public func setRecord(_ record: IndexRecord, for key: Key) throws {
        try db.put(Self.keyPrefix + key.bytes, record.encoded(), sync: true)
    }

    public func removeRecord(for key: Key) throws {
        try db.delete(Self.keyPrefix + key.bytes, sync: true)
    }

    /// Writes a tombstone and queues it for expiry, in one durable batch.
    public func setTombstone(_ record: IndexRecord, for key: Key) throws {
        precondition(record.isTombstone)
        var batch = WriteBatch()
        batch.put(Self.keyPrefix + key.bytes, record.encoded())
        batch.put(Self.tombstoneQueueKey(version: record.version, key: key), [])
        try db.write(batch, sync: true)
    }

    /// Queued tombstones whose version is below `version`, oldest first.
    public func tombstones(issuedBefore version: UInt64, limit: Int) -> [(key: Key, version: UInt64)] {
        var result: [(key: Key, version: UInt64)] = []
        for entry in db.scan(prefix: Self.tombstonePrefix, after: nil, limit: limit) {
            let suffix = Array(entry.key.dropFirst(Self.tombstonePrefix.count))
            guard suffix.count > 8 else { continue }
            let entryVersion = suffix[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard entryVersion < version else { break }
            guard let key = try? Key(Array(suffix[8...])) else { continue }
            result.append((key, entryVersion))
        }
        return result
    }

    /// Drops a tombstone from the expiry queue and, when `removeRecord`, its record too.
    public func forgetTombstone(key: Key, version: UInt64, removeRecord: Bool) throws {
        var batch = WriteBatch()
        batch.delete(Self.tombstoneQueueKey(version: version, key: key))
        if removeRecord { batch.delete(Self.keyPrefix + key.bytes) }
        try db.write(batch, sync: true)
    }

    private static func tombstoneQueueKey(version: UInt64, key: Key) -> [UInt8] {
        var bytes = tombstonePrefix
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: version >> UInt64(shift))) }
        return bytes + key.bytes
    }

    /// Keys starting with `prefix`, after `after`, in byte order, with their records.
    public func list(prefix: [UInt8], after: [UInt8]?, limit: Int) throws -> [(Key, IndexRecord)] {
        db.scan(prefix: Self.keyPrefix + prefix, after: after.map { Self.keyPrefix + $0 }, limit: limit)
            .compactMap { entry in
                guard let key = try? Key(Array(entry.key.dropFirst())),
                      let record = IndexRecord(decoding: entry.value) else { return nil }
                return (key, record)
            }
    }

    /// RocksDB's estimate of the number of records.
    public var estimatedKeyCount: Int { Int(db.property("rocksdb.estimate-num-keys") ?? "") ?? 0 }

    // MARK: Cluster state

    public func volumeURLs() throws -> [String] {
        guard let bytes = try db.get(Self.volumesKey) else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    public func setVolumeURLs(_ urls: [String]) throws {
        try db.put(Self.volumesKey, Array(urls.joined(separator: "\n").utf8), sync: true)
    }

    public func versionCeiling() throws -> UInt64 {
        guard let bytes = try db.get(Self.versionCeilingKey), bytes.count == 8 else { return 0 }
        return bytes.readLittleEndian(UInt64.self, at: 0)
    }

    public func setVersionCeiling(_ ceiling: UInt64) throws {
        var bytes: [UInt8] = []
        bytes.append(littleEndian: ceiling)
        try db.put(Self.versionCeilingKey, bytes, sync: true)
    }
}
