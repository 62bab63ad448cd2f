import Foundation
import Synchronization

/// The ledger of uncommitted versions: which versions this volume has written but not yet
/// seen the outcome of (committed, refused, or their file gone), and since when. Pure
/// bookkeeping in memory, no disk: the journal's log (`JournalLog`) makes every change
/// durable first and is the only one to change it; GETs ask whether a version is still in
/// doubt, and the orphan sweep asks for the entries that outlived the grace period.
///
/// A mutex of its own, held only for dictionary operations: a reader never waits on the
/// log's lock, which orders the file's writes and syncs.
final class UncommittedLedger: Sendable {
    typealias Entry = UncommittedJournal.Entry

    /// Entry → when it was recorded (seconds since 1970).
    private let pending: Mutex<[Entry: Double]>

    init(_ entries: [Entry: Double] = [:]) {
        pending = Mutex(entries)
    }

    var count: Int { pending.withLock { $0.count } }

    /// Notes a version as uncommitted since `time`.
    func record(_ entry: Entry, at time: Double) {
        pending.withLock { $0[entry] = time }
    }

    /// Strikes a version off. Returns how many are left, or nil if it was not pending.
    func strike(_ entry: Entry) -> Int? {
        pending.withLock { $0.removeValue(forKey: entry) != nil ? $0.count : nil }
    }

    /// Whether this version is still waiting for its commit's outcome.
    func isPending(_ entry: Entry) -> Bool {
        pending.withLock { $0[entry] != nil }
    }

    /// Entries recorded before `time` (seconds since 1970), oldest first.
    func entries(olderThan time: Double, limit: Int) -> [Entry] {
        snapshot.filter { $0.value < time }.sorted { $0.value < $1.value }.prefix(limit).map(\.key)
    }

    /// Every entry with its time, as of now (a copy on write: taking it costs nothing under
    /// the mutex, the next change pays for the copy).
    var snapshot: [Entry: Double] { pending.withLock { $0 } }
}
