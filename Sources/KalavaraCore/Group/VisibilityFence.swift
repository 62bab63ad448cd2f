import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// On a standby: the keys written by batches it holds but may not show yet.
///
/// A standby applies each batch as it arrives (the leader counts on it being durable here),
/// but with two or more standbys it must not show a write before every other master that
/// answers reads holds it too: a reader here would see the new value, and a later reader on
/// a standby still without it the old one. The leader sends with each answer the sequence
/// through which every other standby that may answer reads has confirmed (its *visible
/// through* mark); batches beyond it are applied, and their keys fenced until a later mark
/// passes them. With one standby the mark is the end of the leader's log, so nothing waits.
///
/// A key is fenced before its batch is applied and released only by a mark, so a read that
/// finds its key unfenced *after* reading saw no write beyond the mark.
final class VisibilityFence: @unchecked Sendable {
    /// `fenced`, `everyKeyThrough` and `lastMark` are behind its mutex; it is broadcast
    /// when keys are released.
    private let condition = MonotonicCondition()
    /// Raw index key → the last sequence of the newest batch beyond the mark that wrote it.
    private var fenced: [[UInt8]: UInt64] = [:]
    /// Every key is fenced until a mark reaches this: while a checkpoint is copied (`.max`)
    /// and after it is installed (its sequence), for it holds the leader's latest writes.
    private var everyKeyThrough: UInt64?
    /// The last mark the leader sent: what every standby that answered reads then held.
    var lastMark: UInt64 { condition.withLock { storedMark } }
    private var storedMark: UInt64 = 0
    /// Whether anything is fenced, read without the lock: every redirect of a group's
    /// master asks, and nearly always nothing is. Changed only under the lock.
    private let anyFenced = Atomic(false)
    /// How long a read waits for its key to be released before answering `503`.
    let patience: Double

    init(patience: Double) {
        self.patience = patience
    }

    /// Before `batches` are applied: fences the keys of those beyond `visibleThrough`.
    func willApply(_ batches: [ReplicatedBatch], visibleThrough: UInt64) {
        // The keys are read from the batches before the lock: readers wait on it.
        let beyond = batches.filter { $0.next - 1 > visibleThrough }.map { (keys: $0.keys, last: $0.next - 1) }
        guard !beyond.isEmpty else { return }
        condition.withLock {
            for batch in beyond {
                for key in batch.keys { fenced[key] = max(fenced[key] ?? 0, batch.last) }
            }
            noteFenced()
        }
    }

    /// A mark from the leader: releases every key written at or before it. Marks are not
    /// taken as only growing: a new leader's may be lower than its predecessor's.
    func advance(to visibleThrough: UInt64) {
        condition.withLock {
            storedMark = visibleThrough
            var released = false
            if let through = everyKeyThrough, visibleThrough >= through {
                everyKeyThrough = nil
                released = true
            }
            if !fenced.isEmpty, fenced.values.contains(where: { $0 <= visibleThrough }) {
                fenced = fenced.filter { $0.value > visibleThrough }
                released = true
            }
            if released {
                noteFenced()
                condition.broadcast()
            }
        }
    }

    /// Fences every key until a mark reaches `sequence` (`.max`: until told otherwise):
    /// the index is being replaced by a checkpoint, or was, at `sequence`.
    func fenceEveryKey(through sequence: UInt64) {
        condition.withLock {
            fenced.removeAll()
            everyKeyThrough = sequence
            noteFenced()
        }
    }

    /// Forgets every fence: this master has led long enough that no standby of the
    /// previous leader still answers reads (see `MasterGroup.tick`).
    func clear() {
        condition.withLock {
            fenced.removeAll()
            everyKeyThrough = nil
            noteFenced()
            condition.broadcast()
        }
    }

    /// Called under the lock after `fenced` or `everyKeyThrough` changed.
    private func noteFenced() {
        anyFenced.store(everyKeyThrough != nil || !fenced.isEmpty, ordering: .releasing)
    }

    /// The first of `keys` (raw index keys) that is fenced. Without the lock when nothing
    /// is: a key fenced after this looked was fenced before its write was applied, so
    /// before whatever the caller read (see the type's comment).
    func firstFenced(_ keys: some Sequence<[UInt8]>) -> [UInt8]? {
        guard anyFenced.load(ordering: .acquiring) else { return nil }
        return condition.withLock {
            if everyKeyThrough != nil { return keys.first { _ in true } }
            guard !fenced.isEmpty else { return nil }
            return keys.first { fenced[$0] != nil }
        }
    }

    /// Waits until `key` is released; false at `deadline` (monotonic seconds).
    func waitForRelease(of key: [UInt8], until deadline: Double) -> Bool {
        condition.withLock {
            while everyKeyThrough != nil || fenced[key] != nil {
                if monotonicSeconds() >= deadline { return false }
                condition.wait(until: deadline)
            }
            return true
        }
    }

    /// How many keys are fenced now, plus one while every key is (tests).
    var count: Int { condition.withLock { fenced.count + (everyKeyThrough == nil ? 0 : 1) } }

    /// The answer to a read whose key stayed fenced for `patience`.
    static func stillFenced(_ patience: Double) -> HTTPError {
        var error = HTTPError(503, "a write to this key is not yet held by every master that answers reads "
                                   + "(waited \(patience) s); retry shortly")
        error.headers["Retry-After"] = "1"
        return error
    }
}
