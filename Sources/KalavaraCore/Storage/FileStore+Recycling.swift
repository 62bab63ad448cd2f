// FileStore's inode recycling: the open-inode registry, the recycled files, and removal.
import Foundation
import KalavaraHTTP
import Synchronization

extension FileStore {
    private func openLock(_ stem: String) -> NSLock {
        var hash = 0
        for byte in stem.utf8.prefix(4) { hash = hash &* 31 &+ Int(byte) }
        return openLocks[hash & (openLocks.count - 1)]
    }

    /// Opens a value file for reading and registers its inode as open until the returned
    /// descriptor closes. Nil (errno set) if it cannot be opened.
    func openRegistered(_ path: String, stem: String) -> (OpenFile, stat)? {
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
}
