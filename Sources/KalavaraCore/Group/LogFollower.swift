import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// A standby's half of replication: it copies the leader's index once (a checkpoint), then
/// polls the leader's log and applies each batch to its own RocksDB, synced, before asking
/// for more, which is how the leader learns it holds them. Its sequence numbers stay the
/// leader's, so "from where" is one number.
///
/// When its history is not a prefix of the leader's (it led, or followed a leader, past
/// the point where the current leader's epoch began), or the leader's log no longer reaches
/// back to it, it takes a new checkpoint: what it held beyond is what the group never
/// acknowledged.
final class LogFollower: @unchecked Sendable {
    private unowned let group: MasterGroup
    private let index: Index
    /// Polls: a leader that stopped answering (SIGSTOP) is noticed within seconds.
    private let client: HTTPClient
    /// Checkpoint files, which may be large.
    private let copies: HTTPClient
    /// Polls back to back: the leader holds a poll until there is something to send, and
    /// every write waits for the next poll (50 ms between polls cost 20× the PUT rate).
    private let loop = BackgroundLoop("group-follow", schedule: .pausing(0))
    /// Held across each apply (never across a call to the leader, which may hang): `pause`
    /// takes it, so a campaign never races an apply.
    private let applying = Mutex(())
    private let paused = Atomic(false)
    private let needsCheckpoint = Atomic(false)
    /// Called after batches are applied: the master reloads what it derives from the index.
    var applied: @Sendable () -> Void = {}
    /// When a failure to follow was last logged (monotonic seconds): once every 10 s at most.
    private let lastLoggedFailure = Mutex(-Double.infinity)

    init(group: MasterGroup, index: Index, secret: ClusterSecret?) {
        self.group = group
        self.index = index
        // A poll waits up to half a second at the leader.
        client = HTTPClient(timeout: LogShipping.pollWait + 2, maxIdlePerHost: 2, signer: secret)
        copies = HTTPClient(timeout: 30, maxIdlePerHost: 0, signer: secret)
    }

    func start() { loop.start { [weak self] in self?.round() } }
    func stop() { loop.stop() }

    /// No apply runs from when this returns until `resume`.
    func pause() {
        paused.store(true, ordering: .sequentiallyConsistent)
        applying.withLock { _ in }
    }

    func resume() { paused.store(false, ordering: .sequentiallyConsistent) }

    /// Runs `body` (an apply) unless a campaign paused the follower or this master leads.
    private func unlessPaused(_ body: () throws -> Void) rethrows {
        try applying.withLock { _ in
            guard !paused.load(ordering: .sequentiallyConsistent), !group.isLeader else { return }
            try body()
        }
    }

    private func round() {
        guard !group.isLeader, !paused.load(ordering: .sequentiallyConsistent), let leader = group.leader else {
            _ = loop.pause(0.1)
            return
        }
        do {
            if needsCheckpoint.load(ordering: .relaxed) || index.db.latestSequence == 0 {
                // The copy holds the leader's latest writes, which another standby may lack:
                // nothing is shown until a mark reaches them.
                group.fence.fenceEveryKey(through: .max)
                try CheckpointTransfer(client: copies, index: index).copy(from: leader.url, member: group.url, install: unlessPaused)
                group.fence.fenceEveryKey(through: index.db.latestSequence)
                needsCheckpoint.store(false, ordering: .relaxed)
                applied()
                return
            }
            try poll(leader.url)
        } catch {
                let now = monotonicSeconds()
            let log = lastLoggedFailure.withLock { last -> Bool in
                guard now - last > 10 else { return false }
                last = now
                return true
            }
            if log { Log.warning("following the leader \(leader.url): \(error)") }
            _ = loop.pause(0.2)
        }
    }

    private func poll(_ leader: String) throws {
        let history = try index.epochHistory()
        let from = index.db.latestSequence + 1
        var query = QueryParameters()
        query.add("member", group.url)
        query.add("epoch", String(history.current))
        query.add("from", String(from))
        guard let url = HTTPURL(leader + "/internal/group/log?" + query.encoded) else { throw HTTPError(500, "bad leader URL \(leader)") }
        let answer = try client.send("GET", url)
        switch answer.status {
        case 200:
            let batches = try ReplicatedBatch.decode(answer.body)
            // A leader that sends no mark counts on no other standby.
            let visibleThrough = answer.headers[LogShipping.visibleThroughHeader].flatMap(UInt64.init) ?? .max
            if !batches.isEmpty {
                group.fence.willApply(batches, visibleThrough: visibleThrough)
                do {
                    try unlessPaused { try index.db.apply(batches, sync: true) }
                } catch let gap as RocksDB.LogGap {
                    needsCheckpoint.store(true, ordering: .relaxed)
                    throw gap
                }
                applied()
            }
            group.fence.advance(to: visibleThrough)
        case 409, 410:
            // Diverged, or the leader's log no longer reaches back here.
            Log.warning("this standby takes a new copy of the leader's index: \(answer.text)")
            needsCheckpoint.store(true, ordering: .relaxed)
        default:
            throw HTTPError(502, "the leader answered \(answer.status): \(answer.text)")
        }
    }
}
