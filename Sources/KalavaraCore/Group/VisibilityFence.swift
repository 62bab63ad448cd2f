import Foundation
import KalavaraHTTP
import KalavaraSupport

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
    /// `fenced` and `mark` are behind its mutex; it is broadcast when a mark releases keys.
    private let condition = MonotonicCondition()
    /// Raw index key → the last sequence of the newest batch beyond the mark that wrote it.
    private var fenced: [[UInt8]: UInt64] = [:]
    private var mark: UInt64 = 0
    /// How long a read waits for its key to be released before answering `503`.
    let patience: Double

    init(patience: Double) {
        self.patience = patience
    }

    /// Before `batches` are applied: fences the keys of those beyond `visibleThrough`.
    func willApply(_ batches: [ReplicatedBatch], visibleThrough: UInt64) {
        let beyond = batches.filter { $0.next - 1 > visibleThrough }
        guard !beyond.isEmpty else { return }
        condition.withLock {
            for batch in beyond {
                for key in batch.keys { fenced[key] = max(fenced[key] ?? 0, batch.next - 1) }
            }
        }
    }

    /// A new mark from the leader: releases every key written at or before it.
    func advance(to visibleThrough: UInt64) {
        condition.withLock {
            mark = max(mark, visibleThrough)
            guard !fenced.isEmpty else { return }
            fenced = fenced.filter { $0.value > mark }
            condition.broadcast()
        }
    }

    /// Forgets every fence: the index was replaced by a checkpoint, or this master leads.
    func clear() {
        condition.withLock {
            fenced.removeAll()
            mark = 0
            condition.broadcast()
        }
    }

    /// The first of `keys` (raw index keys) that is fenced.
    func firstFenced(_ keys: some Sequence<[UInt8]>) -> [UInt8]? {
        condition.withLock {
            guard !fenced.isEmpty else { return nil }
            return keys.first { fenced[$0] != nil }
        }
    }

    /// Waits until `key` is released; false at `deadline` (monotonic seconds).
    func waitForRelease(of key: [UInt8], until deadline: Double) -> Bool {
        condition.withLock {
            while fenced[key] != nil {
                if monotonicSeconds() >= deadline { return false }
                condition.wait(until: deadline)
            }
            return true
        }
    }

    /// How many keys are fenced now (the status of replication, and tests).
    var count: Int { condition.withLock { fenced.count } }

    /// The answer to a read whose key stayed fenced for `patience`.
    static func stillFenced(_ patience: Double) -> HTTPError {
        var error = HTTPError(503, "a write to this key is not yet held by every master that answers reads "
                                   + "(waited \(patience) s); retry shortly")
        error.headers["Retry-After"] = "1"
        return error
    }
}
