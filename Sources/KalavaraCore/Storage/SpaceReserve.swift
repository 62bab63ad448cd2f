import Foundation
import KalavaraSupport
import Synchronization

/// Room held back on a volume's disk for the journal, as a preallocated file next to it.
///
/// Freeing space costs a little space first: a removal is journaled before its file goes,
/// and the journal is compacted (and rewritten at every start) through a new file. On a
/// disk filled to the last block by values, neither could happen, so nothing could ever be
/// freed and the volume could not even restart. The journal releases this room when one of
/// those writes finds the disk full, and the write is tried again; from then on the volume
/// is in read-and-delete mode (it refuses new values, `507`) until the room can be taken
/// back, which the journal tries after removals and once a checkpoint interval.
///
/// Taking and giving back run one at a time (`changing`): a refill runs without the
/// journal's lock (the checkpoint thread, after a removal) and a release under it, and a
/// release unlinking the file between a refill's fallocate and its `held = true` would
/// leave the room counted as held with no file behind it (read-and-delete mode left
/// falsely, no room to give back at the next full disk, no refill ever again). The
/// journal's lock is never taken under `changing`, so the two cannot deadlock; a release
/// waits at most for one refill's fallocate and fsync, and only when the disk is full.
final class SpaceReserve: Sendable {
    let path: String
    let bytes: Int
    /// Read without the lock (every PUT asks); written only under `changing`.
    private let held = Atomic<Bool>(false)
    private let changing = Mutex(())
    /// Whether read-and-delete mode has been logged (entering and leaving it are logged once).
    private let announced = Atomic<Bool>(false)

    /// The room for a disk: a sixteenth of it, between 64 KiB and 4 MiB. Removal records are
    /// ~100 bytes and a compaction writes the pending entries (a full disk sends small
    /// values back to fsyncing their files long before the journal holds much of them).
    static func bytes(forDiskAt path: String) -> Int {
        min(4 << 20, max(64 << 10, FileStore.totalBytes(at: path) / 16))
    }

    init(path: String, bytes: Int) {
        self.path = path
        self.bytes = bytes
    }

    /// Whether the room is held now: false means the disk filled up and it was given back.
    var isHeld: Bool { held.load(ordering: .acquiring) }

    /// Takes the room (again). Returns whether it is held; a disk still too full to give it
    /// back leaves no partial file behind. Once given back, it is taken again only with a
    /// quarter as much free beside it: a disk with exactly the reserve's room would take
    /// it and fill up at the next write, in and out of read-and-delete mode at every delete.
    @discardableResult
    func refill() -> Bool {
        if isHeld { return true }
        return changing.withLock { _ in refillLocked() }
    }

    private func refillLocked() -> Bool {
        if isHeld { return true }
        let existing = Self.allocatedBytes(path)
        if existing < bytes, FileStore.freeBytes(at: (path as NSString).deletingLastPathComponent) < bytes - existing + bytes / 4 {
            announceFull()
            return false
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        let allocated = fd >= 0 && posix_fallocate(fd, 0, off_t(bytes)) == 0 && fsync(fd) == 0
        if fd >= 0 { close(fd) }
        guard allocated else {
            unlink(path)
            announceFull()
            return false
        }
        held.store(true, ordering: .releasing)
        if announced.exchange(false, ordering: .acquiringAndReleasing) {
            Log.info("disk space is back: the journal's reserve (\(bytes) bytes) is held again and the volume accepts writes")
        }
        return true
    }

    private func announceFull() {
        guard !announced.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Log.warning("disk full: read-and-delete mode (GETs and DELETEs are served, PUTs answer 507) "
                    + "until \(bytes + bytes / 4) bytes are free for the journal's reserve")
    }

    /// Gives the room back to the filesystem. Returns whether any was given (false: it was
    /// not held, so retrying the write that found the disk full is pointless).
    func release() -> Bool {
        let existed = changing.withLock { _ in
            let existed = unlink(path) == 0
            held.store(false, ordering: .releasing)
            return existed
        }
        if existed { Log.warning("disk full: the journal's space reserve is released so that removals can free space") }
        announceFull()
        return existed
    }

    private static func allocatedBytes(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_blocks) * 512 : 0
    }

    /// Whether `error` is a full disk (or quota), the one failure the reserve is for.
    static func isFull(_ error: Error) -> Bool {
        if case StorageError.io(_, let code) = error { return code == ENOSPC || code == EDQUOT }
        return false
    }
}
