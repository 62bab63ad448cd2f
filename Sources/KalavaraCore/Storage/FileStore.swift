import CEpoll
import Foundation
import KalavaraSupport
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
    let recycled = Mutex<(paths: [String], named: Int)>(([], 0))
    /// Value files open for reading in this process: inode number → how many opens.
    let openInodes = Mutex<[UInt64: Int]>([:])
    /// Orders a reader's open (and its entry in `openInodes`) against a removal of the same
    /// file: a removal that finds no reader registered knows none can appear, since a
    /// later open of the path finds nothing. One of these per stem, striped.
    let openLocks = (0..<64).map { _ in NSLock() }
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
        BackgroundLoop("file-count", schedule: .once).start { [self] in
            var count = 0
            for bucket in Self.entries(data) { count += Self.entries(data + "/" + bucket).count }
            countLock.lock()
            filesCounted = count
            countLock.unlock()
        }
    }

    func countChange(_ delta: Int) {
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

    /// `data/abc/STEM.VERSION`, written into one string of a known size: a volume names the
    /// file of every read this way, and the five concatenations it was cost 6,000
    /// instructions a GET (a fifth of what the volume spent beyond nginx).
    func path(stem: String, version: UInt64) -> String {
        var digits = 1
        var rest = version / 10
        while rest > 0 { digits += 1; rest /= 10 }
        let count = dataDirectory.utf8.count + 1 + Self.bucketDigits + 1 + stem.utf8.count + 1 + digits
        return String(unsafeUninitializedCapacity: count) { out in
            var end = Self.copy(dataDirectory, into: out, at: 0)
            out[end] = UInt8(ascii: "/")
            end = Self.copy(stem, upTo: Self.bucketDigits, into: out, at: end + 1)
            out[end] = UInt8(ascii: "/")
            end = Self.copy(stem, into: out, at: end + 1)
            out[end] = UInt8(ascii: ".")
            end += 1
            var value = version
            for index in stride(from: end + digits - 1, through: end, by: -1) {
                out[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
            return end + digits
        }
    }

    /// Copies the first `limit` bytes of `text` to `out[start...]`; returns where they end.
    private static func copy(_ text: String, upTo limit: Int = .max, into out: UnsafeMutableBufferPointer<UInt8>,
                             at start: Int) -> Int {
        var text = text
        return text.withUTF8 { bytes in
            let count = min(limit, bytes.count)
            for index in 0..<count { out[start + index] = bytes[index] }
            return start + count
        }
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

    /// Opens a version of `key` (the newest present when `version` is nil). With
    /// `readingUpTo`, a value of at most that many bytes is read with its header, in the
    /// same `pread` (`StoredValue.contents`): a GET of a small value reads its file once.
    public func open(_ key: Key, version: UInt64?, readingUpTo readAhead: Int = 0) throws -> StoredValue? {
        guard let version = version ?? versions(of: key).last else { return nil }
        let stem = Self.fileStem(key)
        return try openFile(path(stem: stem, version: version), stem: stem, what: "value file for \(key)",
                            readAhead: readAhead) {
            $0.key == key && $0.version == version
        }
    }

    /// Opens a value file and reads its header, which must pass `belongs`; nil if the file
    /// is gone. A file of at most `readAhead` bytes beyond the largest header is read whole:
    /// its value is kept in `contents` when the read got all of it (a file cut since the
    /// open's fstat is left to `readVerified`, whose read comes up short, as before).
    private func openFile(_ path: String, stem: String, what: @autoclosure () -> String, readAhead: Int = 0,
                          belongs: (ValueFileHeader) -> Bool) throws -> StoredValue? {
        guard let (file, info) = openRegistered(path, stem: stem) else {
            if errno == ENOENT { return nil }
            throw StorageError.io("cannot open value", errno)
        }
        let fd = file.fd, fileSize = Int(info.st_size)
        let headerWanted = min(fileSize, ValueFileHeader.maxEncodedBytes)
        let whole = readAhead > 0 && fileSize <= ValueFileHeader.maxEncodedBytes + readAhead
        var bytes = [UInt8](unsafeUninitializedCapacity: whole ? fileSize : headerWanted) { buffer, initialized in
            initialized = max(0, pread(fd, buffer.baseAddress, buffer.count, 0))
        }
        guard bytes.count >= headerWanted, let header = ValueFileHeader.decode(bytes), belongs(header) else {
            throw StorageError.corrupt("\(what()) has a bad header")
        }
        var contents: [UInt8]?
        if whole, bytes.count == fileSize, fileSize - header.encodedCount <= readAhead {
            bytes.removeFirst(header.encodedCount)
            contents = bytes
        }
        return StoredValue(file: file, key: header.key, version: header.version, valueOffset: header.encodedCount,
                           size: fileSize - header.encodedCount, modified: Int(info.st_mtim.tv_sec),
                           checksum: header.checksum, declaredSize: header.size.flatMap { Int(exactly: $0) },
                           contents: contents)
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

    // MARK: Removing

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

    /// The size of the filesystem holding `path`.
    public static func totalBytes(at path: String) -> Int {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return 0 }
        return Int(info.f_blocks) * Int(info.f_frsize)
    }

    public func totalBytes() -> Int { Self.totalBytes(at: dataDirectory) }

    /// Free bytes on the filesystem that holds `path`.
    public static func freeBytes(at path: String) -> Int {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return 0 }
        return Int(info.f_bavail) * Int(info.f_frsize)
    }
}
