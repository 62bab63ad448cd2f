// PendingWrite: a value being written, from temporary file to durable rename.
import CEpoll
import Foundation
import KalavaraSupport

/// A write in progress: bytes go to a temporary file until `finish` makes them a value.
public final class PendingWrite {
    private let store: FileStore
    let key: Key
    let version: UInt64
    private var fd: Int32
    private let tmpPath: String
    /// True until the temporary file has been renamed into place or removed.
    private var tmpFileExists = true
    fileprivate(set) var valueBytes = 0
    /// Running CRC-32 of the value bytes, computed as they stream in.
    private(set) var checksum = CRC32()

    init(store: FileStore, key: Key, version: UInt64, fd: Int32, tmpPath: String) {
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
    func append(_ bytes: UnsafeRawBufferPointer) throws {
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

    func writeAll(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try writeAll($0) } }

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

    func append(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try append($0) } }

    /// Bytes moved per read and write while streaming a value in. Below glibc's mmap
    /// threshold, so each write's buffer is a cheap heap allocation.
    static let streamBufferBytes = 64 * 1024

    /// Appends everything `read` produces until it returns 0, one buffer at a time (the
    /// value is never whole in memory), showing each piece to `forEachPiece` as well: how
    /// a volume writes an upload and forwards it to the replicas in the same pass.
    func appendAll(reading read: (UnsafeMutableRawBufferPointer) throws -> Int,
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
    func finish(expecting expected: UInt32? = nil, durably: Bool = true, beforeRename: () throws -> Void = {}) throws {
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
    func abort() {
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
