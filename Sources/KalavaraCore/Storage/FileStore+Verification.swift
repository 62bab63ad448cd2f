// FileStore's scrub verification: reading a value back against its checksum, and the two quarantine paths.
import Foundation
import KalavaraSupport

extension FileStore {
    /// Reads a value's bytes (all of them: call only for small values) and checks them.
    /// Nil when the file fails its checksum or size; a format 1 file is returned unchecked.
    /// Bytes the open already read (`contents`) are checked without reading again.
    public func readVerified(_ value: StoredValue) throws -> [UInt8]? {
        let bytes = try value.contents ?? read(value)
        guard let expected = value.checksum else { return bytes }
        return value.isWhole && CRC32.checksum(bytes) == expected ? bytes : nil
    }

    private func read(_ value: StoredValue) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: value.size)
        let count = bytes.withUnsafeMutableBytes { pread(value.file.fd, $0.baseAddress, value.size, off_t(value.valueOffset)) }
        guard count == value.size else { throw StorageError.io("short read of a value", count < 0 ? errno : EIO) }
        return bytes
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
}
