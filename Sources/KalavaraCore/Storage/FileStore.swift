import CEpoll
import Foundation
import Prometheus
import Synchronization

/// A volume's values as files: `DIR/data/abc/<sha256(key)>.<version>`.
///
/// A write streams into `DIR/tmp`, is fsynced, renamed into place and its directory
/// fsynced, so a value is either wholly there or not at all, even across a crash. Each
/// version of a key is a file of its own: a new version never overwrites the committed
/// one, which stays readable until the master has committed its successor.
///
/// There are 4,096 bucket directories (the first three hex digits of the hash), made on
/// first use: only the first write into each pays for creating it and syncing `data`, so a
/// new volume is at full speed after a few thousand writes. At ten million values a bucket
/// holds about 2,500 files, which ext4's hashed directories handle well; only rare paths
/// list a bucket (a commit names the version it replaced).
///
/// Inodes are recycled: a removed small value file is moved into `DIR/tmp` and emptied
/// rather than unlinked, and the next write fills it instead of creating a file. On ext4
/// without a journal (this project's benchmark machine), creating an inode skips every
/// inode freed in the last minute or more and looks each one up on the way: after a few
/// thousand deletes a create cost 600 µs of kernel CPU instead of 30 (see BENCHMARKS.md).
/// A file some reader of this process still has open is never recycled (see `remove`).
///
/// Sendable by hand: the counts are behind `countLock`, the recycling state behind its
/// mutexes; the rest is immutable.
public final class FileStore: @unchecked Sendable {
    public let root: String
    let tmpDirectory: String
    let dataDirectory: String
    /// Buckets: directories under `data`, named by the first `bucketDigits` hex digits.
    static let bucketDigits = 3
    /// Time of each value file's fsync and each directory fsync, when measured.
    let valueSyncs: DurationHistogram?
    let directorySyncs: DurationHistogram?
    /// Guards `filesCounted` and `filesChanged`.
    private let countLock = NSLock()
    private var filesCounted: Int?
    private var filesChanged = 0
    /// Removed value files waiting in `tmp` to be filled again, and a counter naming them.
    private let recycled = Mutex<(paths: [String], named: Int)>(([], 0))
    /// Value files open for reading in this process: inode number → how many opens.
    private let openInodes = Mutex<[UInt64: Int]>([:])
    /// Orders a reader's open (and its entry in `openInodes`) against a removal of the same
    /// file: a removal that finds no reader registered knows none can appear, since a
    /// later open of the path finds nothing. One of these per stem, striped.
    private let openLocks = (0..<64).map { _ in NSLock() }
    /// Files up to this size are recycled (larger ones are unlinked: their blocks are
    /// worth giving back), and at most this many wait.
    static let recycledFileBytes = 64 * 1024
    static let recycledFilesKept = 256

    /// Opens (creating) the store under `root`. Leftover temporary files are partial
    /// writes of a previous run that never became values: they are removed.
    public init(root: String, metrics: Metrics? = nil) throws {
        self.root = root
        valueSyncs = metrics?.histogram("kalavara_value_fsync_duration_seconds", "Time of a value file's fsync")
        directorySyncs = metrics?.histogram("kalavara_directory_fsync_duration_seconds",
                                            "Time of a bucket directory's fsync after a rename or removal")
        tmpDirectory = root + "/tmp"
        dataDirectory = root + "/data"
        for directory in [root, tmpDirectory, dataDirectory] {
            if mkdir(directory, 0o755) != 0, errno != EEXIST {
                throw StorageError.io("cannot create \(directory)", errno)
            }
        }
        var tmpStat = stat(), dataStat = stat()
        guard stat(tmpDirectory, &tmpStat) == 0, stat(dataDirectory, &dataStat) == 0 else {
            throw StorageError.io("cannot stat \(root)", errno)
        }
        // rename(2) is atomic only within one filesystem.
        guard tmpStat.st_dev == dataStat.st_dev else {
            throw StorageError.io("\(tmpDirectory) and \(dataDirectory) are on different filesystems", EXDEV)
        }
        guard access(dataDirectory, W_OK) == 0 else { throw StorageError.io("\(dataDirectory) is not writable", errno) }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmpDirectory)) ?? [] {
            unlink(tmpDirectory + "/" + name)
        }
    }

    // MARK: Counting

    /// Value files on this volume (a key being overwritten counts twice for a moment), or
    /// nil until the count taken at start-up is done.
    public var valueFileCount: Int? {
        countLock.lock()
        defer { countLock.unlock() }
        return filesCounted.map { $0 + filesChanged }
    }

    /// Counts the value files once, on a background thread; from then on the count is kept
    /// up to date as files come and go.
    public func startCounting() {
        let data = dataDirectory
        Thread { [self] in
            var count = 0
            for bucket in Self.entries(data) { count += Self.entries(data + "/" + bucket).count }
            countLock.lock()
            filesCounted = count
            countLock.unlock()
        }.start()
    }

    fileprivate func countChange(_ delta: Int) {
        countLock.lock()
        filesChanged += delta
        countLock.unlock()
    }

    private static func entries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    // MARK: Names

    /// The hex SHA-256 of the key: the stem of every file of that key.
    public static func fileStem(_ key: Key) -> String { SHA256.hex(key.bytes) }

    func bucket(forStem stem: String) -> String {
        dataDirectory + "/" + stem.prefix(Self.bucketDigits)
    }

    func path(stem: String, version: UInt64) -> String {
        bucket(forStem: stem) + "/" + stem + "." + String(version)
    }

    // MARK: Writing

    /// Starts a new version of `key`: a temporary file holding the header.
    public func beginWrite(key: Key, version: UInt64) throws -> PendingWrite {
        var tmpPath = "", fd: Int32 = -1
        if let reused = recycled.withLock({ $0.paths.popLast() }) {
            fd = Glibc.open(reused, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC)
            if fd >= 0 { tmpPath = reused } else { unlink(reused) }
        }
        if fd < 0 {
            tmpPath = tmpDirectory + "/" + UUID().uuidString
            fd = Glibc.open(tmpPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        }
        guard fd >= 0 else { throw StorageError.io("cannot create a temporary file", errno) }
        let header = ValueFileHeader(key: key, version: version, checksum: 0, size: 0)
        let write = PendingWrite(store: self, key: key, version: version, fd: fd, tmpPath: tmpPath)
        try write.writeAll(header.encoded())
        return write
    }

    /// Creates a bucket on its first use, durably.
    func createBucket(_ bucket: String) throws {
        if mkdir(bucket, 0o755) != 0, errno != EEXIST { throw StorageError.io("cannot create \(bucket)", errno) }
        try Self.syncDirectory(dataDirectory)
    }

    /// fsync of a bucket, measured.
    func syncBucket(_ path: String) throws {
        guard let directorySyncs else { return try Self.syncDirectory(path) }
        try directorySyncs.time { try Self.syncDirectory(path) }
    }

    static func syncDirectory(_ path: String) throws {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StorageError.io("cannot open \(path)", errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StorageError.io("fsync \(path)", errno) }
    }

    /// rename(2) without replacing: renameat2's RENAME_NOREPLACE, or where the filesystem
    /// lacks it, link(2) then unlink(2) (link fails with EEXIST as well).
    static func renameNoReplace(_ from: String, _ to: String) -> Bool {
        if kalavara_rename_noreplace(from, to) == 0 { return true }
        guard errno == EINVAL || errno == ENOSYS else { return false }
        guard link(from, to) == 0 else { return false }
        unlink(from)
        return true
    }

    /// Whether this version of the key is stored here.
    public func holds(_ key: Key, version: UInt64) -> Bool {
        access(path(stem: Self.fileStem(key), version: version), F_OK) == 0
    }

    // MARK: Reading

    /// The versions of `key` present here, oldest first. Reads the key's bucket directory
    /// with readdir: a bucket holds few files, and no Foundation objects are made per name.
    public func versions(of key: Key) -> [UInt64] {
        let stem = Self.fileStem(key)
        guard let directory = opendir(bucket(forStem: stem)) else { return [] }
        defer { closedir(directory) }
        let prefix = Array((stem + ".").utf8)
        var versions: [UInt64] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> [UInt8] in
                Array(raw.prefix(while: { $0 != 0 }))
            }
            guard name.count > prefix.count, name.starts(with: prefix),
                  let version = UInt64(String(decoding: name[prefix.count...], as: UTF8.self)) else { continue }
            versions.append(version)
        }
        return versions.sorted()
    }

    /// Opens a version of `key` (the newest present when `version` is nil).
    public func open(_ key: Key, version: UInt64?) throws -> StoredValue? {
        guard let version = version ?? versions(of: key).last else { return nil }
        let stem = Self.fileStem(key)
        return try openFile(path(stem: stem, version: version), stem: stem, what: "value file for \(key)") {
            $0.key == key && $0.version == version
        }
    }

    private func openLock(_ stem: String) -> NSLock {
        var hash = 0
        for byte in stem.utf8.prefix(4) { hash = hash &* 31 &+ Int(byte) }
        return openLocks[hash & (openLocks.count - 1)]
    }

    /// Opens a value file for reading and registers its inode as open until the returned
    /// descriptor closes. Nil (errno set) if it cannot be opened.
    private func openRegistered(_ path: String, stem: String) -> (OpenFile, stat)? {
        let lock = openLock(stem)
        lock.lock()
        defer { lock.unlock() }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            errno = code
            return nil
        }
        let inode = UInt64(info.st_ino)
        openInodes.withLock { $0[inode, default: 0] += 1 }
        let file = OpenFile(fd: fd) { [weak self] in
            self?.openInodes.withLock { open in
                if let count = open[inode], count > 1 { open[inode] = count - 1 } else { open[inode] = nil }
            }
        }
        return (file, info)
    }

    /// Value files open for reading now (for tests).
    var openValueFiles: Int { openInodes.withLock { $0.values.reduce(0, +) } }

    /// Removed files waiting to be filled again (for tests).
    var recycledFiles: Int { recycled.withLock { $0.paths.count } }

    /// Unlinks every recycled file: their blocks go back to the filesystem (a full disk).
    func dropRecycled() {
        for path in recycled.withLock({ state in defer { state.paths = [] }; return state.paths }) { unlink(path) }
    }

    /// Opens a value file and reads its header, which must pass `belongs`; nil if the file
    /// is gone.
    private func openFile(_ path: String, stem: String, what: @autoclosure () -> String,
                          belongs: (ValueFileHeader) -> Bool) throws -> StoredValue? {
        guard let (file, info) = openRegistered(path, stem: stem) else {
            if errno == ENOENT { return nil }
            throw StorageError.io("cannot open value", errno)
        }
        let fd = file.fd
        var headerBytes = [UInt8](repeating: 0, count: min(Int(info.st_size), ValueFileHeader.maxEncodedBytes))
        let count = headerBytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count == headerBytes.count, let header = ValueFileHeader.decode(headerBytes), belongs(header) else {
            throw StorageError.corrupt("\(what()) has a bad header")
        }
        return StoredValue(file: file, key: header.key, version: header.version, valueOffset: header.encodedCount,
                           size: Int(info.st_size) - header.encodedCount, modified: Int(info.st_mtim.tv_sec),
                           checksum: header.checksum, declaredSize: header.size.flatMap { Int(exactly: $0) })
    }

    /// Reads a value's bytes (all of them: call only for small values) and checks them.
    /// Nil when the file fails its checksum or size; a format 1 file is returned unchecked.
    public func readVerified(_ value: StoredValue) throws -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: value.size)
        let count = bytes.withUnsafeMutableBytes { pread(value.file.fd, $0.baseAddress, value.size, off_t(value.valueOffset)) }
        guard count == value.size else { throw StorageError.io("short read of a value", count < 0 ? errno : EIO) }
        guard let expected = value.checksum else { return bytes }
        return value.isWhole && CRC32.checksum(bytes) == expected ? bytes : nil
    }

    /// What a full read of a value found.
    public enum Verdict: Equatable, Sendable {
        case good, corrupt, unverified
    }

    /// Reads a whole value file in pieces and checks it against its header, calling
    /// `pace` with each piece's size (the scrub's rate limit).
    public func verify(_ value: StoredValue, pace: (Int) -> Void = { _ in }) throws -> Verdict {
        guard let expected = value.checksum else { return .unverified }
        guard value.isWhole else { return .corrupt }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: PendingWrite.streamBufferBytes, alignment: 16)
        defer { buffer.deallocate() }
        var crc = CRC32()
        var offset = 0
        while offset < value.size {
            let want = min(buffer.count, value.size - offset)
            let count = pread(value.file.fd, buffer.baseAddress, want, off_t(value.valueOffset + offset))
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw StorageError.io("reading a value to verify it", count < 0 ? errno : EIO) }
            crc.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            offset += count
            pace(count)
        }
        return crc.value == expected ? .good : .corrupt
    }

    /// Moves a bad file out of the data directory into `DIR/quarantine/`, kept for
    /// inspection and never served again. With `checked`, only if the file at the path is
    /// still the one that was checked (a good copy may have been renamed into its place
    /// meanwhile). Returns whether a file moved.
    @discardableResult
    public func quarantine(_ key: Key, version: UInt64, checked: StoredValue? = nil) throws -> Bool {
        let directory = try quarantineDirectory()
        let stem = Self.fileStem(key)
        let current = path(stem: stem, version: version)
        if let checked {
            var open = stat(), named = stat()
            guard fstat(checked.file.fd, &open) == 0, stat(current, &named) == 0,
                  open.st_ino == named.st_ino, open.st_dev == named.st_dev else { return false }
        }
        if rename(current, directory + "/" + stem + "." + String(version)) != 0 {
            if errno == ENOENT { return false }
            throw StorageError.io("cannot move a value file to quarantine", errno)
        }
        countChange(-1)
        try syncBucket(bucket(forStem: stem))
        try Self.syncDirectory(directory)
        return true
    }

    // MARK: Walking

    /// The names of value files (`STEM.VERSION`) after `cursor`, in order of name (bucket
    /// by bucket), at most `limit`. The scrub and the inventory page through the volume
    /// with this: each page reads a few bucket directories, never all of them.
    public func fileNames(after cursor: String?, limit: Int) -> [String] {
        var names: [String] = []
        let buckets = Self.entries(dataDirectory).filter { $0.count == Self.bucketDigits }.sorted()
        let startBucket = cursor.map { String($0.prefix(Self.bucketDigits)) }
        for bucket in buckets where startBucket == nil || bucket >= startBucket! {
            let inBucket = Self.entries(dataDirectory + "/" + bucket).sorted()
            for name in inBucket where cursor == nil || name > cursor! {
                names.append(name)
                if names.count == limit { return names }
            }
        }
        return names
    }

    /// Opens a value file by name (as `fileNames` gives them); nil if it is gone or not one.
    public func open(fileNamed name: String) throws -> StoredValue? {
        guard let dot = name.lastIndex(of: "."), let version = UInt64(name[name.index(after: dot)...]) else { return nil }
        let stem = String(name[..<dot])
        return try openFile(path(stem: stem, version: version), stem: stem, what: "value file \(name)") {
            $0.version == version && Self.fileStem($0.key) == stem
        }
    }

    /// Moves a file whose header cannot be read to quarantine, by name. Returns whether it moved.
    @discardableResult
    public func quarantine(fileNamed name: String) throws -> Bool {
        let directory = try quarantineDirectory()
        guard let dot = name.lastIndex(of: ".") else { return false }
        let stem = String(name[..<dot])
        guard rename(bucket(forStem: stem) + "/" + name, directory + "/" + name) == 0 else { return false }
        countChange(-1)
        return true
    }

    /// `DIR/quarantine`, made on first use.
    private func quarantineDirectory() throws -> String {
        let directory = root + "/quarantine"
        if mkdir(directory, 0o755) != 0, errno != EEXIST { throw StorageError.io("cannot create \(directory)", errno) }
        return directory
    }

    // MARK: Removing

    /// Removes the given version of `key`, if present. Returns whether a file went.
    /// `durably: false` skips the bucket's fsync (the removal is journaled).
    @discardableResult
    public func remove(_ key: Key, version: UInt64, durably: Bool = true) throws -> Bool {
        let stem = Self.fileStem(key)
        let path = path(stem: stem, version: version)
        let lock = openLock(stem)
        lock.lock()
        let gone: Int32
        // Recycled only if no reader here has it open: a recycled inode is truncated and
        // filled with another value, which such a reader would then read. Under the stem's
        // lock no reader can be half way between opening it and registering.
        var info = stat()
        if lstat(path, &info) == 0, info.st_size <= Self.recycledFileBytes, (info.st_mode & S_IFMT) == S_IFREG,
           openInodes.withLock({ $0[UInt64(info.st_ino)] == nil }),
           let name = recycled.withLock({ state -> String? in
               guard state.paths.count < Self.recycledFilesKept else { return nil }
               state.named += 1
               return tmpDirectory + "/recycled-\(state.named)"
           }) {
            gone = rename(path, name)
            // Emptied now, not when a write reuses it: a removed value's bytes must not wait
            // whole in `tmp` (deleted or overwritten data, readable by anyone who can read
            // the directory) for a write that may never come. If it cannot be emptied, it goes.
            if gone == 0 {
                if truncate(name, 0) == 0 { recycled.withLock { $0.paths.append(name) } } else { unlink(name) }
            }
        } else {
            gone = unlink(path)
        }
        let failure = errno
        lock.unlock()
        if gone != 0 {
            if failure == ENOENT { return false }
            throw StorageError.io("cannot remove a value file", failure)
        }
        countChange(-1)
        if durably { try syncBucket(bucket(forStem: stem)) }
        return true
    }

    /// Makes the files match what the journal recorded since its last checkpoint, after a
    /// crash: a value whose file is missing or not whole is written again (durably, from
    /// the journal's copy); a removed one is removed again. Returns how many files changed.
    public func replay(_ records: [(entry: UncommittedJournal.Entry, settlement: UncommittedJournal.Settlement)]) throws -> Int {
        var changed = 0
        for (entry, settlement) in records {
            let stem = Self.fileStem(entry.key)
            let path = path(stem: stem, version: entry.version)
            switch settlement {
            case .removed:
                if unlink(path) == 0 {
                    try syncBucket(bucket(forStem: stem))
                    changed += 1
                }
            case .value(let bytes, let crc):
                // A whole file that passes its own checksum stays, even with other bytes: a
                // version is written once, so it is the upload whose rename won (another
                // upload of the same version, refused with 409, journaled its bytes too).
                if let held = try? open(entry.key, version: entry.version), held.checksum != nil,
                   (try? readVerified(held)).flatMap({ $0 }) != nil {
                    continue
                }
                if unlink(path) == 0 { try syncBucket(bucket(forStem: stem)) }
                let write = try beginWrite(key: entry.key, version: entry.version)
                do {
                    try write.append(bytes)
                    try write.finish(expecting: crc)
                } catch {
                    write.abort()
                    throw error
                }
                changed += 1
            }
        }
        return changed
    }

    /// Removes every version of `key` for which `shouldRemove` holds.
    @discardableResult
    public func removeVersions(of key: Key, where shouldRemove: (UInt64) -> Bool) throws -> Int {
        var removed = 0
        for version in versions(of: key) where shouldRemove(version) {
            if try remove(key, version: version) { removed += 1 }
        }
        return removed
    }

    /// Free bytes on the filesystem that holds the data.
    public func freeBytes() -> Int { Self.freeBytes(at: dataDirectory) }

    /// Free bytes on the filesystem that holds `path`.
    /// The size of the filesystem holding `path`.
    public static func totalBytes(at path: String) -> Int {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return 0 }
        return Int(info.f_blocks) * Int(info.f_frsize)
    }

    public func totalBytes() -> Int { Self.totalBytes(at: dataDirectory) }

    public static func freeBytes(at path: String) -> Int {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return 0 }
        return Int(info.f_bavail) * Int(info.f_frsize)
    }
}

/// One version of a value, open for reading; the value starts after its header.
public struct StoredValue: Sendable {
    public let file: OpenFile
    public let key: Key
    public let version: UInt64
    public let valueOffset: Int
    public let size: Int
    /// Seconds since the epoch.
    public let modified: Int
    /// CRC-32 of the value from the header; nil for a format 1 (unverified) file.
    public let checksum: UInt32?
    /// The size the header says; a file of another size was cut or grown.
    public let declaredSize: Int?

    /// False for a file cut or grown since it was written: its length is not the size its
    /// header records (format 1 files record none). Checked on every read, copy and listing:
    /// it costs nothing (the length comes from the open's fstat) and sendfile never reads
    /// the bytes it sends.
    public var isWhole: Bool { declaredSize.map { $0 == size } ?? true }
}

/// A write in progress: bytes go to a temporary file until `finish` makes them a value.
public final class PendingWrite {
    private let store: FileStore
    public let key: Key
    public let version: UInt64
    private var fd: Int32
    private let tmpPath: String
    /// True until the temporary file has been renamed into place or removed.
    private var tmpFileExists = true
    public fileprivate(set) var valueBytes = 0
    /// Running CRC-32 of the value bytes, computed as they stream in.
    public private(set) var checksum = CRC32()

    fileprivate init(store: FileStore, key: Key, version: UInt64, fd: Int32, tmpPath: String) {
        self.store = store
        self.key = key
        self.version = version
        self.fd = fd
        self.tmpPath = tmpPath
    }

    deinit { abort() }

    /// Appends value bytes, adding them to the checksum. Every `writebackBytes` the kernel
    /// is asked to start writing what came in (without waiting), so a large value never
    /// leaves hundreds of MiB dirty for the final fsync — nor for the fsyncs of small writes
    /// that would queue behind them (a repair copying 64 MiB values made clients' PUT p99
    /// 5× worse without this).
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        try writeAll(bytes)
        checksum.update(bytes)
        valueBytes += bytes.count
        if valueBytes - writtenBack >= Self.writebackBytes {
            _ = kalavara_start_writeback(fd, Int64(writtenBack), Int64(valueBytes - writtenBack))
            writtenBack = valueBytes
        }
    }

    /// Value bytes handed to write-back so far, and how often to hand more.
    private var writtenBack = 0
    static let writebackBytes = 8 << 20

    fileprivate func writeAll(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try writeAll($0) } }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                let code = errno
                if code == ENOSPC || code == EDQUOT { store.dropRecycled() }
                throw StorageError.io("write", code)
            }
            offset += written
        }
    }

    public func append(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try append($0) } }

    /// Bytes moved per read and write while streaming a value in. Below glibc's mmap
    /// threshold, so each write's buffer is a cheap heap allocation.
    static let streamBufferBytes = 64 * 1024

    /// Appends everything `read` produces until it returns 0, one buffer at a time (the
    /// value is never whole in memory), showing each piece to `forEachPiece` as well: how
    /// a volume writes an upload and forwards it to the replicas in the same pass.
    public func appendAll(reading read: (UnsafeMutableRawBufferPointer) throws -> Int,
                          forEachPiece: (UnsafeRawBufferPointer) -> Void = { _ in }) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.streamBufferBytes, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = try read(buffer)
            if count == 0 { return }
            let piece = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            try append(piece)
            forEachPiece(piece)
        }
    }

    /// Makes the bytes durable and visible as this version: fsync the file, rename it into
    /// its bucket, fsync the bucket. A crash before the rename leaves only a temporary file.
    /// `beforeRename` runs once the bytes are durable (the volume journals the version there).
    /// With `expecting`, the value must have that checksum (a copy from another volume):
    /// otherwise the write is dropped and `StorageError.checksumMismatch` thrown.
    /// `durably: false` skips the file's and the bucket's fsync: for a value whose bytes are
    /// durable elsewhere until the filesystem is synced (the volume's journal).
    public func finish(expecting expected: UInt32? = nil, durably: Bool = true, beforeRename: () throws -> Void = {}) throws {
        if let expected, expected != checksum.value { throw StorageError.checksumMismatch }
        var trailer: [UInt8] = []
        trailer.append(littleEndian: checksum.value)
        trailer.append(littleEndian: UInt64(valueBytes))
        let patched = trailer.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(ValueFileHeader.checksumOffset)) }
        guard patched == trailer.count else { throw StorageError.io("writing the value's checksum", errno) }
        if durably {
            let synced = store.valueSyncs.map { histogram in histogram.time { fsync(fd) } } ?? fsync(fd)
            guard synced == 0 else { throw StorageError.io("fsync", errno) }
        }
        try beforeRename()
        close(fd)
        fd = -1
        let stem = FileStore.fileStem(key)
        let bucket = store.bucket(forStem: stem)
        let finalPath = store.path(stem: stem, version: version)
        // A version is written once: never over a file already in place (a replayed or
        // concurrent upload of the same version loses here, and drops only its own file).
        var renamed = FileStore.renameNoReplace(tmpPath, finalPath)
        if !renamed, errno == ENOENT {
            try store.createBucket(bucket)
            renamed = FileStore.renameNoReplace(tmpPath, finalPath)
        }
        if !renamed, errno == EEXIST { throw StorageError.versionExists }
        guard renamed else { throw StorageError.io("rename", errno) }
        tmpFileExists = false
        store.countChange(1)
        guard durably else { return }
        do {
            try store.syncBucket(bucket)
        } catch {
            // Not durable, so not acknowledged: it must not stay behind as a value either.
            if unlink(finalPath) == 0 { store.countChange(-1) }
            throw error
        }
    }

    /// Drops the temporary file (an interrupted upload, a full disk). Safe to call twice.
    public func abort() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if tmpFileExists {
            tmpFileExists = false
            unlink(tmpPath)
        }
    }
}

/// A storage failure, mapped to an HTTP answer: a full disk is `507`, the rest `500`.
public enum StorageError: Error, CustomStringConvertible, Sendable {
    case io(String, Int32)
    case corrupt(String)
    /// A copy's bytes did not match the checksum its sender gave.
    case checksumMismatch
    /// This version of the key is already stored: a version is written once.
    case versionExists

    public var description: String {
        switch self {
        case .io(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        case .corrupt(let what): return what
        case .checksumMismatch: return "the value does not match its checksum"
        case .versionExists: return "this version of the key is already stored"
        }
    }

    public var httpError: HTTPError {
        switch self {
        // EFBIG: the file size limit (RLIMIT_FSIZE) is a disk that is full for this process.
        case .io(_, let code) where code == ENOSPC || code == EDQUOT || code == EFBIG:
            return HTTPError(507, "volume is out of disk space")
        case .checksumMismatch:
            return HTTPError(422, "the value does not match its checksum")
        case .versionExists:
            return HTTPError(409, "this version of the key is already stored here: a version is written once")
        default:
            return HTTPError(500, "storage error: \(description)")
        }
    }
}
