import CRocksDB
import Foundation
import Synchronization

/// One write batch as RocksDB logged it: its first sequence number, how many sequence
/// numbers it uses, and its serialized form (`rocksdb_writebatch_data`).
///
/// Only batches of puts and deletes in the default column family are accepted (all that
/// `RocksDB.write` makes): the data is parsed in full before a batch exists, because RocksDB
/// would log a malformed batch before failing to apply it, and then fail to replay its log.
public struct ReplicatedBatch: Sendable, Equatable {
    public let sequence: UInt64
    public let count: UInt32
    public let data: [UInt8]
    /// The sequence number of the batch that follows it.
    public var next: UInt64 { sequence + UInt64(count) }

    /// Why bytes were refused as a batch or as an encoding of batches.
    public struct Malformed: Error, CustomStringConvertible {
        public let description: String
    }

    /// RocksDB's header: the fixed64 sequence, then the fixed32 count.
    static let headerSize = 12

    /// The batch whose serialized form is `data`; throws unless it is a well-formed batch of
    /// exactly its counted puts and deletes.
    public init(data: [UInt8]) throws {
        guard data.count >= Self.headerSize else { throw Malformed(description: "a batch of \(data.count) bytes") }
        sequence = data.readLittleEndian(UInt64.self, at: 0)
        count = data.readLittleEndian(UInt32.self, at: 8)
        var offset = Self.headerSize
        for index in 0..<count {
            guard offset < data.count else { throw Malformed(description: "a batch ends at its record \(index) of \(count)") }
            let tag = data[offset]
            offset += 1
            switch tag {
            case 0x1: _ = try Self.slice(data, &offset); _ = try Self.slice(data, &offset) // put: key, value
            case 0x0: _ = try Self.slice(data, &offset) // delete: key
            default: throw Malformed(description: "a batch record of type \(tag), neither a put nor a delete")
            }
        }
        guard offset == data.count else { throw Malformed(description: "\(data.count - offset) bytes after a batch's records") }
        self.data = data
    }

    /// The keys its records put or delete (checked well-formed by `init`).
    var keys: [[UInt8]] {
        var keys: [[UInt8]] = []
        keys.reserveCapacity(Int(count))
        var offset = Self.headerSize
        for _ in 0..<count {
            let tag = data[offset]
            offset += 1
            guard let key = try? Self.slice(data, &offset) else { break }
            keys.append(Array(data[key]))
            if tag == 0x1, (try? Self.slice(data, &offset)) == nil { break }
        }
        return keys
    }

    /// Steps over a length-prefixed slice (varint32 length, then the bytes): where they are.
    private static func slice(_ data: [UInt8], _ offset: inout Int) throws -> Range<Int> {
        var length = 0
        for shift in stride(from: 0, through: 28, by: 7) {
            guard offset < data.count else { throw Malformed(description: "a batch ends inside a length") }
            let byte = data[offset]
            offset += 1
            guard shift < 28 || byte <= 0x0F else { throw Malformed(description: "a length over 32 bits") }
            length |= Int(byte & 0x7F) << shift
            if byte & 0x80 == 0 {
                guard length <= data.count - offset else { throw Malformed(description: "a batch ends inside a key or value") }
                offset += length
                return offset - length..<offset
            }
        }
        throw Malformed(description: "a length over 32 bits")
    }

    /// The wire format for HTTP bodies: the number of batches (UInt32, little-endian), then
    /// each batch's byte count (UInt32) and data. The count makes every truncation an error.
    public static func encode(_ batches: [ReplicatedBatch]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + batches.reduce(0) { $0 + 4 + $1.data.count })
        bytes.append(littleEndian: UInt32(batches.count))
        for batch in batches {
            bytes.append(littleEndian: UInt32(batch.data.count))
            bytes += batch.data
        }
        return bytes
    }

    /// The batches `encode` wrote; any other bytes (short, long, or a malformed batch) throw.
    public static func decode(_ bytes: [UInt8]) throws -> [ReplicatedBatch] {
        guard bytes.count >= 4 else { throw Malformed(description: "\(bytes.count) bytes, without a batch count") }
        let total = Int(bytes.readLittleEndian(UInt32.self, at: 0))
        var batches: [ReplicatedBatch] = []
        batches.reserveCapacity(min(total, bytes.count / (4 + headerSize)))
        var offset = 4
        for index in 0..<total {
            guard bytes.count - offset >= 4 else { throw Malformed(description: "the encoding ends before batch \(index) of \(total)") }
            let length = Int(bytes.readLittleEndian(UInt32.self, at: offset))
            offset += 4
            guard bytes.count - offset >= length else { throw Malformed(description: "the encoding ends inside batch \(index) of \(total)") }
            batches.append(try ReplicatedBatch(data: Array(bytes[offset..<offset + length])))
            offset += length
        }
        guard offset == bytes.count else { throw Malformed(description: "\(bytes.count - offset) bytes after the last batch") }
        return batches
    }
}

extension RocksDB {
    /// The log does not hold the batch starting at `expected`: it was purged (`found` is the
    /// first batch left, if any), `expected` lies inside a logged batch, or batches given to
    /// `apply` do not follow the database's latest sequence. The cure is a checkpoint.
    public struct LogGap: Error, CustomStringConvertible {
        public let expected: UInt64
        public let found: UInt64?

        public var description: String {
            guard let found else { return "the log holds no batch at sequence \(expected)" }
            let kind = found < expected ? "overlapping what came before" : "a gap"
            return "a batch at sequence \(found) where \(expected) was expected (\(kind))"
        }
    }

    /// The sequence number of the last write; 0 once closed.
    public var latestSequence: UInt64 {
        (try? whileOpen { rocksdb_get_latest_sequence_number(db) }) ?? 0
    }

    /// A checkpoint of the database in `directory` (which must not exist; on the same
    /// filesystem table files are hard links, not copies): the memtables are flushed first,
    /// so it holds everything written before the call. Returns the latest sequence it
    /// holds, read by opening it read-only (RocksDB's C API does not report it).
    public func checkpoint(into directory: String) throws -> UInt64 {
        try whileOpen {
            var error: UnsafeMutablePointer<CChar>?
            let checkpoint = rocksdb_checkpoint_object_create(db, &error)
            if let message = Self.take(error) { throw Failure(description: message) }
            defer { rocksdb_checkpoint_object_destroy(checkpoint) }
            rocksdb_checkpoint_create(checkpoint, directory, 0, &error)
            if let message = Self.take(error) { throw Failure(description: message) }
        }
        let options = rocksdb_options_create()
        defer { rocksdb_options_destroy(options) }
        let copy = try Self.open(options!, directory, readOnly: true)
        defer { rocksdb_close(copy) }
        return rocksdb_get_latest_sequence_number(copy)
    }

    /// Reads the log from `sequence` on (the next one a follower lacks: its latestSequence
    /// + 1). Throws `LogGap` when the log no longer holds `sequence` (purged: the follower
    /// needs a checkpoint) or when `sequence` is beyond the latest + 1 (the follower holds
    /// writes this database never made).
    public func logTail(from sequence: UInt64) throws -> LogTail {
        let tail = LogTail(self, from: sequence)
        try whileOpen {
            guard sequence <= rocksdb_get_latest_sequence_number(db) + 1 else { throw LogGap(expected: sequence, found: nil) }
            try tail.prime()
        }
        return tail
    }

    /// Applies batches read from another database's log, in order, the last with a synced
    /// write when `sync`. Each is written on its own, so this database's log has the same
    /// batch boundaries and it can serve tails in turn. Throws `LogGap`, writing nothing,
    /// unless batches[0].sequence == latestSequence + 1 and each follows the previous;
    /// after it, latestSequence == batches.last.next - 1. Writes are refused while held off
    /// (see `write`); a failure part way leaves the batches before it applied.
    public func apply(_ batches: [ReplicatedBatch], sync: Bool) throws {
        try whileOpen {
            var expected = rocksdb_get_latest_sequence_number(db) + 1
            for batch in batches {
                guard batch.sequence == expected else { throw LogGap(expected: expected, found: batch.sequence) }
                expected = batch.next
            }
            for (index, batch) in batches.enumerated() {
                // Checked again: a local write in between would shift every later sequence.
                let latest = rocksdb_get_latest_sequence_number(db)
                guard batch.sequence == latest + 1 else { throw LogGap(expected: latest + 1, found: batch.sequence) }
                let handle = batch.data.withUnsafeBufferPointer { data in
                    data.withMemoryRebound(to: CChar.self) { rocksdb_writebatch_create_from($0.baseAddress, $0.count)! }
                }
                defer { rocksdb_writebatch_destroy(handle) }
                try unlockedWrite(handle, sync: sync && index == batches.count - 1)
            }
        }
    }

    /// Destroys every tail's log iterator (before `db` closes: they point into it).
    /// Called with the lifetime lock held exclusively; a tail's next read starts anew.
    func destroyLogIterators() {
        logIterators.withLock { slots in
            for slot in slots.values { slot.destroy() }
        }
    }
}

/// Where a `LogTail` keeps its RocksDB log iterator, registered with its database so that
/// `reopen` and `close` can destroy it first. Read and changed only under the database's
/// lifetime lock: shared by the tail's one reader, exclusive by `reopen` and `close`.
final class LogIteratorSlot: @unchecked Sendable {
    var iterator: OpaquePointer?

    func destroy() {
        if let iterator { rocksdb_wal_iter_destroy(iterator) }
        iterator = nil
    }
}

/// Reads a database's write-ahead log batch by batch from a position on (`RocksDB.logTail`),
/// keeping one RocksDB log iterator between reads.
///
/// Creating an iterator reads its first log file from the start up to the position; at
/// the end of the log an iterator stops, and a later read continues it in the same file.
/// Only when RocksDB answers TryAgain is the iterator made anew, at most once per read: the
/// log moved to a new file, or (rarely: 2 to 5 times in 20,000 writes from 4 threads in
/// `ReplicationLogTests`) a write landed as the iterator reached the end of the log. Not thread-safe: it may pass between threads, but only one
/// may use it at a time.
public final class LogTail: @unchecked Sendable {
    private let database: RocksDB
    private let slot = LogIteratorSlot()
    /// The sequence the iterator will give next (after `pending`).
    private var cursor: UInt64
    /// The first batch, read by `logTail(from:)` to check the log holds the position.
    private var pending: ReplicatedBatch?

    /// The next sequence it will return.
    public var position: UInt64 { pending?.sequence ?? cursor }

    init(_ database: RocksDB, from sequence: UInt64) {
        self.database = database
        cursor = sequence
        database.logIterators.withLock { $0[ObjectIdentifier(slot)] = slot }
    }

    deinit {
        // After `close` the slot is empty already; should this run on an event loop during
        // a reopen (the lock is not waited for there), that reopen empties it.
        try? database.whileOpen { slot.destroy() }
        database.logIterators.withLock { $0[ObjectIdentifier(slot)] = nil }
    }

    /// The batches logged from `position` on that are available now, up to about
    /// `maxBytes` of data (at least one batch if any); empty when caught up. An error after
    /// some batches returns those (they are past `position` already); the next read throws it.
    public func read(maxBytes: Int) throws -> [ReplicatedBatch] {
        try database.whileOpen {
            var batches = pending.map { [$0] } ?? []
            var bytes = pending?.data.count ?? 0
            // An iterator that stopped at the end of the log looks again for batches since.
            if let iterator = slot.iterator, rocksdb_wal_iter_valid(iterator) == 0, status(iterator) == nil {
                rocksdb_wal_iter_next(iterator)
            }
            var created = false
            while batches.isEmpty || bytes < maxBytes {
                let batch: ReplicatedBatch?
                do {
                    batch = try fetch(created: &created)
                } catch {
                    if batches.isEmpty { throw error }
                    break
                }
                guard let batch else { break }
                batches.append(batch)
                bytes += batch.data.count
            }
            pending = nil
            return batches
        }
    }

    /// Reads the first batch ahead (inside the lifetime lock), so that `logTail(from:)`
    /// throws at once when the log no longer holds the position.
    func prime() throws {
        var created = false
        pending = try fetch(created: &created)
    }

    /// The next batch from `cursor` on, or nil when caught up. Makes an iterator when there
    /// is none (once per read, `created`). Any error destroys the iterator, which may have
    /// moved past `cursor`: the next read starts anew from `cursor`.
    private func fetch(created: inout Bool) throws -> ReplicatedBatch? {
        do {
            while true {
                guard let iterator = slot.iterator else {
                    // get_updates_since refuses a sequence not written yet.
                    guard !created, cursor <= rocksdb_get_latest_sequence_number(database.db) else { return nil }
                    created = true
                    try start()
                    continue
                }
                guard rocksdb_wal_iter_valid(iterator) != 0 else {
                    guard let message = status(iterator) else { return nil } // at the end of the log
                    slot.destroy()
                    if message.contains("Try again") { continue } // the log moved to a new file
                    throw RocksDB.Failure(description: message)
                }
                var sequence: UInt64 = 0
                let handle = rocksdb_wal_iter_get_batch(iterator, &sequence)! // once per batch: it moves it out
                let batch = try Self.copy(handle)
                rocksdb_wal_iter_next(iterator)
                guard batch.sequence == sequence else {
                    throw RocksDB.Failure(description: "a logged batch says sequence \(batch.sequence), its log \(sequence)")
                }
                if batch.next <= cursor { continue } // ends before the position (or is empty)
                guard batch.sequence == cursor else { throw RocksDB.LogGap(expected: cursor, found: batch.sequence) }
                cursor = batch.next
                return batch
            }
        } catch {
            slot.destroy()
            throw error
        }
    }

    /// Makes the iterator at `cursor`, which the database has written: it must then find
    /// a batch, or the log no longer holds `cursor`.
    private func start() throws {
        var error: UnsafeMutablePointer<CChar>?
        let iterator = rocksdb_get_updates_since(database.db, cursor, nil, &error)
        if let message = RocksDB.take(error) { throw RocksDB.Failure(description: message) }
        slot.iterator = iterator
        guard rocksdb_wal_iter_valid(iterator) == 0 else { return }
        throw status(iterator!).map { RocksDB.Failure(description: $0) } ?? RocksDB.LogGap(expected: cursor, found: nil)
    }

    private func status(_ iterator: OpaquePointer) -> String? {
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_wal_iter_status(iterator, &error)
        return RocksDB.take(error)
    }

    /// The batch's data, checked, and the C batch destroyed.
    private static func copy(_ handle: OpaquePointer) throws -> ReplicatedBatch {
        defer { rocksdb_writebatch_destroy(handle) }
        var size = 0
        let data = rocksdb_writebatch_data(handle, &size)!
        return try ReplicatedBatch(data: Array(UnsafeRawBufferPointer(start: data, count: size)))
    }
}
