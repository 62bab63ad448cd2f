import CRocksDB
import Foundation
import KalavaraHTTP
import Synchronization

/// A RocksDB database behind a small safe Swift type; the only code that calls its C API.
///
/// Keys and values are byte arrays. Synced writes (`sync: true`) reach the disk before
/// they return; RocksDB batches concurrent synced writers into one WAL fsync (group
/// commit), so many committing threads share the cost of each flush.
final class RocksDB: @unchecked Sendable {
    /// Replaced only by `reopen`, under the lifetime lock held exclusively.
    private(set) var db: OpaquePointer
    private let path: String
    private let options: OpaquePointer
    private let tableOptions: OpaquePointer
    private let cache: OpaquePointer
    private let filter: OpaquePointer
    private let readOptions: OpaquePointer
    /// For walks over the whole index (a placement pass): blocks read are not put in the
    /// block cache, so a walk over 10M keys does not evict the blocks that reads need.
    private let walkOptions: OpaquePointer
    private let syncedWrite: OpaquePointer
    private let bufferedWrite: OpaquePointer
    /// Calls hold it shared; `close` and `reopen` hold it exclusively, so a call still
    /// running when the daemon shuts down finishes first, and any later call fails instead
    /// of touching freed memory. Writer-preferring: under a steady stream of reads a reopen
    /// is still granted (glibc's default lets readers starve a writer forever); so no call
    /// may take it shared twice on one thread.
    /// Guards `isClosed`, `isLost` and `isReadOnly` (and so every use of the handles above).
    private var lifetime = pthread_rwlock_t()
    private var isClosed = false
    /// A `reopen` could open the database neither for writing nor for reading: `db` is gone.
    private var isLost = false
    /// Opened with `rocksdb_open_for_read_only`: reads only, until a `reopen`.
    private var isReadOnly = false
    /// Whether writes are held off (see `writesHeldOff`): read by every write and, on the
    /// event loop, by every PUT and DELETE redirect, so a load, not a lock.
    private let heldOff = Atomic<Bool>(false)
    /// Why writes are held off, for the error a refused write throws.
    private let heldOffReason = Mutex<String>("")
    /// In a master group: who may write, and what a write waits for (see `WriteGate`). Set
    /// once, before the daemon serves; a single master has none.
    var writeGate: (any WriteGate)?
    /// A group's leader's log syncs, grouped (see `SyncGroup`).
    private let logSyncs = SyncGroup()
    /// Reopens are tried one at a time, and at most once per `reopenInterval`: see `reopen`.
    private let reopening = Mutex<(running: Bool, last: ContinuousClock.Instant?)>((false, nil))
    /// The least time between two reopen attempts: an open replays the log (seconds), and
    /// a disk still full fails it again.
    static let reopenInterval: Duration = .seconds(2)
    /// The log iterators of the live `LogTail`s: each points into `db`, so `reopen` and
    /// `close` destroy them before closing it (a tail then starts a new one, or fails).
    let logIterators = Mutex<[ObjectIdentifier: LogIteratorSlot]>([:])

    /// The error RocksDB reported, as one line.
    struct Failure: Error, CustomStringConvertible {
        let description: String
        /// The filesystem was full (RocksDB's status says ENOSPC's text).
        var isNoSpace: Bool { description.contains("No space left") }
    }

    /// Opens (creating if missing) the database in directory `path`; `readOnly` opens an
    /// existing one without writing anything (on a full disk, see `Index.init`), with
    /// writes held off until a `reopen`.
    ///
    /// `keepLog` keeps write-ahead log files RocksDB no longer needs (moved to `archive/`)
    /// for up to `seconds` and up to `megabytes` in all (0: no limit of that kind), so a
    /// standby away that long can catch up from the log (`logTail`) instead of a checkpoint.
    /// nil deletes a log file once its memtable is flushed; a tail then reaches back only
    /// to the oldest live file.
    init(path: String, blockCacheBytes: Int = 64 << 20, readOnly: Bool = false,
                keepLog: (seconds: UInt64, megabytes: UInt64)? = nil) throws {
        self.path = path
        options = rocksdb_options_create()
        rocksdb_options_set_create_if_missing(options, 1)
        rocksdb_options_increase_parallelism(options, 2)
        rocksdb_options_optimize_level_style_compaction(options, 64 << 20)
        rocksdb_options_set_compression(options, Int32(rocksdb_lz4_compression))
        rocksdb_options_set_max_open_files(options, 512)
        rocksdb_options_set_keep_log_file_num(options, 4)
        rocksdb_options_set_max_log_file_size(options, 8 << 20)
        // Writers queued behind a group commit's WAL sync sleep instead of spinning with
        // sched_yield for up to 100 µs each: on a machine of a few cores that spin is CPU
        // the volumes and clients need (it was 4 % of the master's profile under PUT load).
        rocksdb_options_set_enable_write_thread_adaptive_yield(options, 0)
        if let keepLog {
            rocksdb_options_set_WAL_ttl_seconds(options, keepLog.seconds)
            rocksdb_options_set_WAL_size_limit_MB(options, keepLog.megabytes)
        }

        // Point lookups dominate (a GET per redirect): a bloom filter skips files that
        // cannot hold the key, and a bounded block cache keeps memory flat as keys grow.
        tableOptions = rocksdb_block_based_options_create()
        cache = rocksdb_cache_create_lru(blockCacheBytes)
        filter = rocksdb_filterpolicy_create_bloom(10)
        rocksdb_block_based_options_set_block_cache(tableOptions, cache)
        rocksdb_block_based_options_set_filter_policy(tableOptions, filter)
        rocksdb_block_based_options_set_cache_index_and_filter_blocks(tableOptions, 1)
        rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(tableOptions, 1)
        rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(tableOptions, 1)
        // A hash index inside each data block finds a key without a binary search.
        rocksdb_block_based_options_set_data_block_index_type(tableOptions,
            Int32(rocksdb_block_based_table_data_block_index_type_binary_search_and_hash))
        rocksdb_options_set_block_based_table_factory(options, tableOptions)

        readOptions = rocksdb_readoptions_create()
        walkOptions = rocksdb_readoptions_create()
        rocksdb_readoptions_set_fill_cache(walkOptions, 0)
        syncedWrite = rocksdb_writeoptions_create()
        rocksdb_writeoptions_set_sync(syncedWrite, 1)
        bufferedWrite = rocksdb_writeoptions_create()

        if FileManager.default.fileExists(atPath: path + "/" + Self.replacingMarker) {
            // A standby died while taking a copy of the leader's index: what is here is
            // neither its old index nor the copy. It starts empty and copies again.
            try? Self.removeContents(of: path, keeping: [])
        }
        let handle: OpaquePointer
        do {
            handle = try Self.open(options, path, readOnly: readOnly)
        } catch {
            rocksdb_readoptions_destroy(readOptions)
            rocksdb_readoptions_destroy(walkOptions)
            rocksdb_writeoptions_destroy(syncedWrite)
            rocksdb_writeoptions_destroy(bufferedWrite)
            rocksdb_options_destroy(options)
            rocksdb_block_based_options_destroy(tableOptions)
            rocksdb_cache_destroy(cache)
            throw error
        }
        db = handle
        isReadOnly = readOnly
        if readOnly { holdOffWrites("the index was opened read-only") }
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(&lifetime, &attributes)
        pthread_rwlockattr_destroy(&attributes)
    }

    static func open(_ options: OpaquePointer, _ path: String, readOnly: Bool) throws -> OpaquePointer {
        var error: UnsafeMutablePointer<CChar>?
        let handle = readOnly ? rocksdb_open_for_read_only(options, path, 0, &error) : rocksdb_open(options, path, &error)
        if let message = take(error) { throw Failure(description: message) }
        return handle!
    }

    deinit {
        close()
        pthread_rwlock_destroy(&lifetime)
    }

    /// Runs `body` while the database is open; throws once it is closed. An event loop never
    /// waits for the lock (a `reopen` holds it for the seconds an open takes): it hands the
    /// request to a worker instead (`EventLoop.MustHandOff`).
    func whileOpen<T>(_ body: () throws -> T) throws -> T {
        if pthread_rwlock_tryrdlock(&lifetime) != 0 {
            if EventLoop.onLoopThread { throw EventLoop.MustHandOff() }
            pthread_rwlock_rdlock(&lifetime)
        }
        defer { pthread_rwlock_unlock(&lifetime) }
        guard !isClosed else { throw Failure(description: "the index is closed") }
        guard !isLost else { throw Failure(description: "the index could not be reopened") }
        return try body()
    }

    /// Why writes are held off, or nil when they go through. Set when RocksDB fails a write
    /// for want of space: it then keeps a background error, and Debian's 7.x aborts on an
    /// assertion (`sync_without_flush_called_`) when asked to write again; its C API has no
    /// `rocksdb_resume`. So no write reaches it again until `reopen` has closed it and
    /// opened it anew (reads go on meanwhile: they do not touch the failed log).
    var writesHeldOff: Bool { heldOff.load(ordering: .acquiring) }

    /// Holds writes off until a `reopen` (the first reason given is kept): after RocksDB
    /// failed for want of space, or when the disk is so full that a flush or compaction in
    /// the background may fail unseen and leave a background error behind.
    func holdOffWrites(_ reason: String) {
        heldOffReason.withLock { current in
            if !heldOff.load(ordering: .relaxed) { current = reason }
            heldOff.store(true, ordering: .releasing)
        }
    }

    /// Closes the database and opens it again for writing, which clears a background error
    /// (RocksDB recovers from its log what had reached it); if that fails, opens it for
    /// reading only, so reads go on and writes stay held off. Waits for calls in flight;
    /// meanwhile reads on an event loop go to workers (see `whileOpen`).
    ///
    /// One thread at a time, at most once per `reopenInterval`: a caller that finds another
    /// reopen running, or one tried too recently, gets a failure at once instead of waiting
    /// (so writers neither pile up in workers nor each replay the log of a disk still full).
    func reopen() throws {
        let now = ContinuousClock.now
        let turn = reopening.withLock { state -> String? in
            if state.running { return "the index is being reopened" }
            if let last = state.last, now - last < Self.reopenInterval { return "the index was reopened less than 2 s ago" }
            state = (true, now)
            return nil
        }
        if let turn {
            guard writesHeldOff else { return } // the reopen before it succeeded
            throw Failure(description: turn)
        }
        defer { reopening.withLock { $0.running = false } }
        pthread_rwlock_wrlock(&lifetime)
        defer { pthread_rwlock_unlock(&lifetime) }
        guard !isClosed else { throw Failure(description: "the index is closed") }
        guard writesHeldOff else { return } // another writer reopened it first
        if !isLost {
            destroyLogIterators()
            rocksdb_close(db)
        }
        do {
            db = try Self.open(options, path, readOnly: false)
            isLost = false
            isReadOnly = false
            heldOffReason.withLock { _ in heldOff.store(false, ordering: .releasing) }
        } catch {
            isLost = true
            db = try Self.open(options, path, readOnly: true)
            isLost = false
            isReadOnly = true
            throw error
        }
    }

    /// Runs `body` with the database closed (no call in flight, none let in), then opens it
    /// again for writing: `replaceContents` swaps its files meanwhile.
    func whileClosed(_ body: () throws -> Void) throws {
        pthread_rwlock_wrlock(&lifetime)
        defer { pthread_rwlock_unlock(&lifetime) }
        guard !isClosed else { throw Failure(description: "the index is closed") }
        if !isLost {
            destroyLogIterators()
            rocksdb_close(db)
            isLost = true
        }
        try body()
        db = try Self.open(options, path, readOnly: false)
        isLost = false
        isReadOnly = false
        heldOffReason.withLock { _ in heldOff.store(false, ordering: .releasing) }
    }

    /// Closes; later calls fail. Safe to call twice.
    func close() {
        pthread_rwlock_wrlock(&lifetime)
        defer { pthread_rwlock_unlock(&lifetime) }
        guard !isClosed else { return }
        isClosed = true
        if !isLost {
            destroyLogIterators()
            rocksdb_close(db)
        }
        rocksdb_readoptions_destroy(readOptions)
        rocksdb_readoptions_destroy(walkOptions)
        rocksdb_writeoptions_destroy(syncedWrite)
        rocksdb_writeoptions_destroy(bufferedWrite)
        rocksdb_options_destroy(options)
        rocksdb_block_based_options_destroy(tableOptions) // also releases the filter policy
        rocksdb_cache_destroy(cache)
    }

    func get(_ key: [UInt8]) throws -> [UInt8]? {
        try whileOpen { try unlockedGet(key) }
    }

    private func unlockedGet(_ key: [UInt8]) throws -> [UInt8]? {
        var length = 0
        var error: UnsafeMutablePointer<CChar>?
        let value = key.withUnsafeBufferPointer { keyBuffer in
            keyBuffer.withMemoryRebound(to: CChar.self) {
                rocksdb_get(db, readOptions, $0.baseAddress, $0.count, &length, &error)
            }
        }
        if let message = Self.take(error) { throw Failure(description: message) }
        guard let value else { return nil }
        defer { rocksdb_free(value) }
        return Array(UnsafeRawBufferPointer(start: value, count: length).bindMemory(to: UInt8.self))
    }

    func put(_ key: [UInt8], _ value: [UInt8], sync: Bool) throws {
        var batch = WriteBatch()
        batch.put(key, value)
        try write(batch, sync: sync)
    }

    func delete(_ key: [UInt8], sync: Bool) throws {
        var batch = WriteBatch()
        batch.delete(key)
        try write(batch, sync: sync)
    }

    /// Applies all operations of `batch` atomically. Throws without asking RocksDB while
    /// writes are held off (see `writesHeldOff`); a write that fails for want of space
    /// holds them off.
    func write(_ batch: WriteBatch, sync: Bool) throws {
        let handle = rocksdb_writebatch_create()!
        defer { rocksdb_writebatch_destroy(handle) }
        for operation in batch.operations {
            operation.key.withUnsafeBufferPointer { key in
                key.withMemoryRebound(to: CChar.self) { key in
                    if let value = operation.value {
                        value.withUnsafeBufferPointer { value in
                            value.withMemoryRebound(to: CChar.self) { value in
                                rocksdb_writebatch_put(handle, key.baseAddress, key.count, value.baseAddress, value.count)
                            }
                        }
                    } else {
                        rocksdb_writebatch_delete(handle, key.baseAddress, key.count)
                    }
                }
            }
        }
        guard let writeGate else { return try whileOpen { try unlockedWrite(handle, sync: sync) } }
        // In a master group the batch is logged without waiting for the disk, the standbys
        // are woken to fetch it while this log's own sync runs, and the write counts once
        // both hold it: the two fsyncs overlap instead of following each other.
        try writeGate.admit()
        let sequence = try whileOpen {
            try unlockedWrite(handle, sync: false)
            return rocksdb_get_latest_sequence_number(db)
        }
        writeGate.logged(through: sequence)
        guard sync else { return }
        try logSyncs.sync(through: sequence, latest: { latestSequence }) { try whileOpen { try unlockedSyncLog() } }
        try writeGate.settle(through: sequence)
    }

    /// Makes everything logged so far durable (`SyncWAL`; each call runs an fsync, so
    /// concurrent writers go through `logSyncs`).
    private func unlockedSyncLog() throws {
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_flush_wal(db, 1, &error)
        guard let message = Self.take(error) else { return }
        if Failure(description: message).isNoSpace { holdOffWrites(message) }
        throw Failure(description: message)
    }

    /// Writes the batch `handle` (inside `whileOpen`), unless writes are held off; a
    /// failure for want of space holds them off.
    func unlockedWrite(_ handle: OpaquePointer, sync: Bool) throws {
        if writesHeldOff { throw Failure(description: heldOffReason.withLock { $0 }) }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_write(db, sync ? syncedWrite : bufferedWrite, handle, &error)
        guard let message = Self.take(error) else { return }
        let failure = Failure(description: message)
        if failure.isNoSpace { holdOffWrites(message) }
        throw failure
    }

    /// Entries whose keys start with `prefix` and sort strictly after `after` (or from the
    /// start of the prefix), in byte order, at most `limit` of them.
    /// `cached: false` for walks that should not disturb the block cache.
    /// Up to `limit` entries with `prefix` after `after`, in key order; with `stopAfter`, the
    /// scan ends at the first key it accepts (that key included), reading no further.
    func scan(prefix: [UInt8], after: [UInt8]?, limit: Int, cached: Bool = true,
                     stopAfter: (([UInt8]) -> Bool)? = nil) throws -> [(key: [UInt8], value: [UInt8])] {
        // A closed or lost index throws: an empty page would read as "no keys" to a listing
        // and as "the end" to a placement pass.
        try whileOpen { unlockedScan(prefix: prefix, after: after, limit: limit, cached: cached, stopAfter: stopAfter) }
    }

    private func unlockedScan(prefix: [UInt8], after: [UInt8]?, limit: Int, cached: Bool,
                              stopAfter: (([UInt8]) -> Bool)?) -> [(key: [UInt8], value: [UInt8])] {
        let iterator = rocksdb_create_iterator(db, cached ? readOptions : walkOptions)
        defer { rocksdb_iter_destroy(iterator) }
        let start = after.map { $0 + [0] } ?? prefix // the smallest key greater than `after`
        start.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { rocksdb_iter_seek(iterator, $0.baseAddress, $0.count) }
        }
        var result: [(key: [UInt8], value: [UInt8])] = []
        while result.count < limit, rocksdb_iter_valid(iterator) != 0 {
            var keyLength = 0, valueLength = 0
            let keyPointer = rocksdb_iter_key(iterator, &keyLength)!
            let key = Array(UnsafeRawBufferPointer(start: keyPointer, count: keyLength).bindMemory(to: UInt8.self))
            guard key.starts(with: prefix) else { break }
            let valuePointer = rocksdb_iter_value(iterator, &valueLength)!
            let value = Array(UnsafeRawBufferPointer(start: valuePointer, count: valueLength).bindMemory(to: UInt8.self))
            result.append((key, value))
            if let stopAfter, stopAfter(key) { break }
            rocksdb_iter_next(iterator)
        }
        return result
    }

    /// Writes the memtables out to table files (after a bulk load, so a restart does not
    /// replay a large log).
    /// A flush that fails for want of space leaves RocksDB in its background error state:
    /// writes are held off as after a failed write.
    func flush() throws {
        try whileOpen {
            do {
                try unlockedFlush()
            } catch let failure as Failure where failure.isNoSpace {
                holdOffWrites(failure.description)
                throw failure
            }
        }
    }

    private func unlockedFlush() throws {
        let options = rocksdb_flushoptions_create()
        defer { rocksdb_flushoptions_destroy(options) }
        rocksdb_flushoptions_set_wait(options, 1)
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_flush(db, options, &error)
        if let message = Self.take(error) { throw Failure(description: message) }
    }

    /// Compacts the whole key range into the bottom level (after a bulk load: the shape a
    /// long-lived index settles into).
    func compact() throws {
        try whileOpen { rocksdb_compact_range(db, nil, 0, nil, 0) }
    }

    /// A RocksDB property such as "rocksdb.estimate-num-keys".
    func property(_ name: String) -> String? {
        try? whileOpen { unlockedProperty(name) } ?? nil
    }

    private func unlockedProperty(_ name: String) -> String? {
        guard let value = rocksdb_property_value(db, name) else { return nil }
        defer { rocksdb_free(value) }
        return String(cString: value)
    }

    static func take(_ error: UnsafeMutablePointer<CChar>?) -> String? {
        guard let error else { return nil }
        defer { rocksdb_free(error) }
        return String(cString: error)
    }
}

/// Operations applied together by `RocksDB.write`.
struct WriteBatch: Sendable {
    fileprivate var operations: [(key: [UInt8], value: [UInt8]?)] = []
    init() {}
    mutating func put(_ key: [UInt8], _ value: [UInt8]) { operations.append((key, value)) }
    mutating func delete(_ key: [UInt8]) { operations.append((key, nil)) }
    var isEmpty: Bool { operations.isEmpty }
    /// The bytes of its keys and values: what it adds to the log, and later to a table.
    var byteCount: Int { operations.reduce(0) { $0 + $1.key.count + ($1.value?.count ?? 0) } }
}
