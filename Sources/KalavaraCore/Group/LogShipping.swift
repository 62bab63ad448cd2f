import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// The leader's half of replication: standbys pull RocksDB's own log from here, and every
/// durable index write waits until each standby the leader counts on has confirmed it.
///
/// A standby confirms by asking for what follows: a poll `from=N` says it holds, applied and
/// synced, everything up to `N - 1`. One poll carries every batch logged since the last, so
/// the confirmations of concurrent writers are grouped the way RocksDB groups their fsyncs.
///
/// A standby is *waited for* once it has caught up, and *recorded* (in etcd's in-sync set,
/// so it may take over) once it has confirmed everything logged when it started being waited
/// for: from then on it holds every acknowledged write. One that does not confirm a write
/// within the sync timeout stops being waited for; if it was recorded, the leader records
/// the set without it first, and acknowledges nothing while it cannot (nor for half a sync
/// timeout after: see `MasterGroup.settle`).
final class LogShipping: @unchecked Sendable {
    struct Member {
        /// The last sequence it holds.
        var confirmed: UInt64 = 0
        /// Writes wait for it.
        var waitedFor = false
        /// In the in-sync set in etcd.
        var recorded = false
        /// It is recorded once it confirms this (the log's end when it started being waited for).
        var joinTarget: UInt64 = 0
        /// Left the in-sync set: it may still answer reads until then (monotonic seconds).
        var mayAnswerUntil = 0.0
        /// The last *visible through* mark its polls were sent.
        var sentMark: UInt64 = 0
    }

    private let db: RocksDB
    private let syncTimeout: Double
    /// Records the in-sync set in etcd under the leader's lease; throws when it cannot.
    private let recordSet: @Sendable ([String]) throws -> Void

    /// `members`, `marks` and `tails` are behind its mutex; it is broadcast on each
    /// confirmation and each drop, which is what writers wait for.
    private let condition = MonotonicCondition()
    /// Broadcast as the log grows, which is what polls wait for. Apart from `condition`, so
    /// that each write does not wake every writer waiting for its confirmation for nothing.
    private let grown = MonotonicCondition()
    private var members: [String: Member] = [:]
    /// (monotonic time, log end) after each write, for the last few seconds: how far behind
    /// each standby is.
    private var marks: [(time: Double, sequence: UInt64)] = []
    /// Each standby's reader of the log, kept between its polls: a new one seeks from the
    /// start of a log file.
    private var tails: [String: LogTail] = [:]
    /// Serialises changes of the in-sync set (each an etcd transaction).
    private let setChanges = Mutex(())
    /// No standby shows a write beyond `sequence` before `until`: standbys of the previous
    /// leader may still answer reads from what they held then (set on taking over).
    private var visibilityHold: (sequence: UInt64, until: Double) = (.max, 0)

    /// How long a poll waits for a write when the standby is caught up.
    static let pollWait = 0.5
    /// How far behind the log's end a standby may be when it starts being waited for.
    static let joinSlack: UInt64 = 1000
    /// The most a poll's answer carries.
    static let answerBytes = 4 << 20
    /// The answer's header naming the sequence through which the standby may show what it holds.
    static let visibleThroughHeader = "Kalavara-Visible-Through"

    init(db: RocksDB, syncTimeout: Double, recordSet: @escaping @Sendable ([String]) throws -> Void) {
        self.db = db
        self.syncTimeout = syncTimeout
        self.recordSet = recordSet
    }

    // MARK: Writers

    /// Called as soon as a write is in the leader's log: wakes polls waiting for it to grow.
    func logged(through sequence: UInt64) {
        condition.withLock { mark(sequence) }
        wakePolls()
    }

    /// For a durable write: returns once every standby waited for holds `sequence`.
    func settle(through sequence: UInt64) throws {
        let deadline = monotonicSeconds() + syncTimeout
        condition.lock()
        while true {
            let laggards = members.filter { $0.value.waitedFor && $0.value.confirmed < sequence }.map(\.key)
            if laggards.isEmpty { break }
            if monotonicSeconds() >= deadline {
                condition.unlock()
                try drop(laggards, below: sequence)
                condition.lock()
                continue
            }
            condition.wait(until: deadline)
        }
        condition.unlock()
    }

    /// Stops waiting for standbys that did not confirm `sequence` in time; recorded ones
    /// leave the in-sync set in etcd first. Throws if that record cannot be made.
    private func drop(_ laggards: [String], below sequence: UInt64) throws {
        try setChanges.withLock { _ in
            condition.lock()
            let still = laggards.filter { members[$0].map { $0.waitedFor && $0.confirmed < sequence } ?? false }
            let keep = members.filter { $0.value.recorded && !still.contains($0.key) }.map(\.key).sorted()
            let recordedLeaving = still.contains { members[$0]?.recorded == true }
            condition.unlock()
            if recordedLeaving {
                do {
                    try recordSet(keep)
                } catch {
                    throw HTTPError(503, "a standby stopped confirming and the leader cannot record that in etcd (\(error)): "
                                    + "no write is acknowledged until it can")
                }
            }
            // One in the set read it at most half a sync timeout ago, and may answer reads
            // until half a sync timeout after this record (`MasterGroup.servesReads`). Counted
            // for every one dropped: a record whose answer was lost put it in the set too.
            let mayAnswerUntil = monotonicSeconds() + syncTimeout / 2
            condition.lock()
            for url in still {
                members[url]?.mayAnswerUntil = mayAnswerUntil
                members[url]?.waitedFor = false
                members[url]?.recorded = false
            }
            condition.broadcast()
            condition.unlock()
            wakePolls()
            if !still.isEmpty { Log.warning("standby left the in-sync set: it did not confirm a write within \(syncTimeout) s", ["standbys": "\(still)"]) }
        }
    }

    private func mark(_ sequence: UInt64) {
        let now = monotonicSeconds()
        if let last = marks.last, last.sequence >= sequence { return }
        marks.append((now, sequence))
        // Keep one mark older than the window: the log's end at the window's start.
        let horizon = now - max(syncTimeout, 1) * 2
        if let firstInside = marks.firstIndex(where: { $0.time >= horizon }), firstInside > 1 {
            marks.removeFirst(firstInside - 1)
        }
    }

    /// On taking over: no standby shows a write beyond `sequence` for `seconds`.
    func holdVisibility(at sequence: UInt64, for seconds: Double) {
        condition.withLock { visibilityHold = (sequence, monotonicSeconds() + seconds) }
    }

    // MARK: Standbys

    /// A standby's poll: records that it holds everything before `from`, then returns what
    /// the log holds from there (waiting a little when there is nothing yet), and the
    /// sequence through which it may show what it holds (see `VisibilityFence`).
    func poll(member url: String, from: UInt64) throws -> (batches: [ReplicatedBatch], visibleThrough: UInt64) {
        let recordNow = confirm(url, holding: from - 1)
        if recordNow { record(url) }
        var tail = condition.withLock { tails.removeValue(forKey: url) }
        if tail?.position != from { tail = try db.logTail(from: from) }
        defer { condition.withLock { tails[url] = tail } }
        var batches = try tail!.read(maxBytes: Self.answerBytes)
        if batches.isEmpty {
            // Also answered when the mark moves past what it was last sent, while it holds
            // more than that: its readers of those keys are waiting.
            let until = monotonicSeconds() + Self.pollWait
            grown.lock()
            while db.latestSequence < from, !markMoved(for: url, holding: from - 1), monotonicSeconds() < until {
                // A hold that ends moves the mark with nothing to wake the poll: wait no longer.
                grown.wait(until: min(until, nextHoldEnd()))
            }
            grown.unlock()
            batches = try tail!.read(maxBytes: Self.answerBytes)
        }
        // Computed after the read: with no other standby it covers every batch sent.
        let mark = condition.withLock {
            let mark = visibleThrough(for: url)
            members[url]?.sentMark = mark
            return mark
        }
        return (batches, mark)
    }

    /// Through which sequence `url` may show what it holds: every other standby that may
    /// answer reads holds it. Called under `condition`.
    private func visibleThrough(for url: String) -> UInt64 {
        let now = monotonicSeconds()
        var through = db.latestSequence
        for (other, member) in members where other != url && (member.waitedFor || member.mayAnswerUntil > now) {
            through = min(through, member.confirmed)
        }
        if visibilityHold.until > now { through = min(through, visibilityHold.sequence) }
        return through
    }

    /// When the next hold on the marks ends (a dropped standby's or a takeover's), if any.
    private func nextHoldEnd() -> Double {
        condition.withLock {
            let now = monotonicSeconds()
            let ends = members.values.map(\.mayAnswerUntil) + [visibilityHold.until]
            return ends.filter { $0 > now }.min() ?? .infinity
        }
    }

    private func markMoved(for url: String, holding last: UInt64) -> Bool {
        condition.withLock {
            guard let sent = members[url]?.sentMark, sent < last else { return false }
            return visibleThrough(for: url) > sent
        }
    }

    /// Notes a standby's confirmation; true when it has just earned its place in the set.
    private func confirm(_ url: String, holding last: UInt64) -> Bool {
        let (joined, others) = condition.withLock {
            // Read under the lock: a mark computed before this member counts is at most
            // its join target, so it is recorded only once it holds what was shown.
            let latest = db.latestSequence
            var member = members[url] ?? Member()
            member.confirmed = max(member.confirmed, last)
            if !member.waitedFor, last + Self.joinSlack >= latest {
                member.waitedFor = true
                member.joinTarget = latest
            }
            members[url] = member
            condition.broadcast()
            return (member.waitedFor && !member.recorded && member.confirmed >= member.joinTarget, members.count > 1)
        }
        // Another standby's mark may have moved.
        if others { wakePolls() }
        return joined
    }

    /// Wakes the polls waiting for the log to grow or their mark to move. Never called with
    /// `condition` held: a poll holds `grown` while it looks at the marks.
    private func wakePolls() {
        grown.lock()
        grown.broadcast()
        grown.unlock()
    }

    /// Adds a caught-up standby to the in-sync set in etcd; until that is recorded it is
    /// waited for but may not take over.
    private func record(_ url: String) {
        setChanges.withLock { _ in
            condition.lock()
            guard let member = members[url], member.waitedFor, !member.recorded else {
                condition.unlock()
                return
            }
            let set = (members.filter { $0.value.recorded }.map(\.key) + [url]).sorted()
            condition.unlock()
            do {
                try recordSet(set)
                condition.withLock { members[url]?.recorded = true }
                Log.info("standby joined the in-sync set", ["standby": "\(url)"])
            } catch {
                Log.warning("could not record a standby in the in-sync set: \(error)", ["standby": "\(url)"])
            }
        }
    }

    // MARK: The view

    struct MemberView {
        var url: String
        var inSync: Bool
        var lagMilliseconds: Int
    }

    /// Each standby heard from: whether it is in the in-sync set, and how long ago the
    /// oldest write it lacks was made.
    var view: [MemberView] {
        let now = monotonicSeconds()
        return condition.withLock {
            members.map { url, member in
                let oldestLacking = marks.first(where: { $0.sequence > member.confirmed })?.time
                return MemberView(url: url, inSync: member.recorded,
                                  lagMilliseconds: oldestLacking.map { Int((now - $0) * 1000) } ?? 0)
            }.sorted { $0.url < $1.url }
        }
    }
}

extension MonotonicCondition {
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
