import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// `master --etcd`: how the master groups with the others. Each keeps a lease in etcd; the
/// one holding `leader` under its lease leads; the others follow its log (`LogFollower`) and
/// answer reads. Consensus is etcd's: this type only reads and writes its keys.
///
/// The leader's lease is renewed four times a TTL (at most every second). It counts as
/// surely valid until the renewal's *send* time plus the TTL less a fifth of it (at least
/// half a second): etcd started counting no earlier, so the leader stops acknowledging
/// before etcd can let another master in. A leader that learns its
/// lease or key is gone exits (status 75, like a leader-elected controller): a fresh process
/// rejoins as a standby, and whatever it wrote that the group never acknowledged is
/// discarded when it follows the new leader's history.
final class MasterGroup: @unchecked Sendable, WriteGate {
    struct Configuration: Sendable {
        var endpoints: [String]
        var name = "kalavara"
        var leaseTTL = 5
        var syncTimeout = 2.0
        init(endpoints: [String]) { self.endpoints = endpoints }
    }

    let configuration: Configuration
    let url: String
    let etcd: Etcd
    let keys: GroupKeys
    let index: Index
    private(set) var shipping: LogShipping!
    private(set) var follower: LogFollower!
    /// On a standby, the keys it holds but may not show yet.
    let fence: VisibilityFence
    /// Becomes leader: the master's part (reload what it derives from the index, start healing).
    private let promoted: @Sendable () throws -> Void

    private struct State {
        var lease: Int64?
        var leaseSurelyValidUntil = 0.0
        var lastRenewal = -Double.infinity
        var registered = false
        var leader: LeaderRecord?
        var epoch: UInt64 = 0
        /// A standby may answer reads from its copy until then (monotonic seconds).
        var readLeaseUntil = 0.0
        /// A new leader acknowledges nothing before then: see `promote`.
        var holdUntil = 0.0
        /// The in-sync set this leader last recorded.
        var recordedSet: [String] = []
        var ineligibleLogged = false
    }
    private let state = Mutex(State())
    private let leading = Atomic(false)
    private let loop = BackgroundLoop("group", schedule: .pausing(0.25))

    init(_ configuration: Configuration, url: String, index: Index, secret: ClusterSecret?,
                promoted: @escaping @Sendable () throws -> Void) throws {
        self.configuration = configuration
        self.url = url
        self.index = index
        self.promoted = promoted
        keys = GroupKeys(group: configuration.name)
        fence = VisibilityFence(patience: configuration.syncTimeout * 2)
        etcd = Etcd(endpoints: configuration.endpoints.compactMap(HTTPURL.init), timeout: 2)
        shipping = LogShipping(db: index.db, syncTimeout: configuration.syncTimeout,
                               recordSet: { [unowned self] in try recordInSync($0) })
        follower = LogFollower(group: self, index: index, secret: secret)
        index.db.writeGate = self
    }

    func start() {
        loop.start { [weak self] in self?.tick() }
        follower.start()
    }

    /// Stops leading or following; the lease is revoked so a standby takes over at once
    /// rather than after the TTL. Writes still in flight here are no longer acknowledged.
    func stop() {
        leading.store(false, ordering: .releasing)
        follower.stop()
        loop.stop()
        if let lease = state.withLock({ $0.lease }) { try? etcd.revoke(lease) }
    }

    // MARK: Roles

    var isLeader: Bool { leading.load(ordering: .acquiring) }

    /// The leader as last read from etcd (nil: none, or this master).
    var leader: LeaderRecord? { state.withLock { $0.leader } }

    var epoch: UInt64 { state.withLock { $0.epoch } }

    /// Leads, with a lease etcd surely still honours.
    var surelyLeads: Bool {
        isLeader && state.withLock { $0.leaseSurelyValidUntil } > monotonicSeconds()
    }

    /// A standby answers reads from its own copy only while it surely holds every write the
    /// group has acknowledged: for half a sync timeout after etcd said (to a read sent then)
    /// that it is in the in-sync set of its own epoch. A leader that records a set without
    /// a standby, or takes over, acknowledges nothing for that long after (see `settle`), so
    /// no write that standby lacks is acknowledged while it still answers.
    var servesReads: Bool {
        isLeader || state.withLock { $0.readLeaseUntil } > monotonicSeconds()
    }

    func extendReadLease(until time: Double) {
        state.withLock { $0.readLeaseUntil = max($0.readLeaseUntil, time) }
    }

    // MARK: WriteGate

    func admit() throws {
        guard isLeader else { throw HTTPError(503, "this master is a standby: only the leader writes the index") }
    }

    func logged(through sequence: UInt64) { shipping.logged(through: sequence) }

    func settle(through sequence: UInt64) throws {
        try shipping.settle(through: sequence)
        let wait = state.withLock { $0.holdUntil } - monotonicSeconds()
        if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
        guard surelyLeads else {
            throw HTTPError(503, "this master no longer surely leads the group: the write is not acknowledged; retry")
        }
    }

    // MARK: The loop

    private func tick() {
        do {
            try renewLease()
            guard let lease = state.withLock({ $0.lease }) else { return }
            let sent = monotonicSeconds()
            let leader = try etcd.get(keys.leader).flatMap { try? JSONDecoder().decode(LeaderRecord.self, from: Data($0.value)) }
            if isLeader {
                if leader?.url != url || leader?.lease != lease { loseLead("etcd names another leader, or none") }
                // No standby of the previous leader answers reads any more: what this master
                // held but could not show as a standby may be shown now.
                if state.withLock({ $0.holdUntil }) <= monotonicSeconds(), fence.count > 0 { fence.clear() }
                return
            }
            state.withLock { $0.leader = leader?.url == url ? nil : leader }
            if let leader, leader.url == url {
                if leader.lease == lease {
                    // A campaign whose answer was lost (a retried transaction reads as failed) won.
                    promote(leader.epoch)
                } else {
                    // This master's previous process led: its lease can go now.
                    try? etcd.revoke(leader.lease)
                }
                return
            }
            let sync = try etcd.get(keys.sync)
            let record = sync.flatMap { try? JSONDecoder().decode(SyncRecord.self, from: Data($0.value)) }
            if let record, record.members.contains(url), record.epoch == (try index.epochHistory().current) {
                extendReadLease(until: sent + configuration.syncTimeout / 2)
            }
            guard leader == nil else { return }
            if let record, !record.mayLead(url) {
                let first = state.withLock { state -> Bool in
                    defer { state.ineligibleLogged = true }
                    return !state.ineligibleLogged
                }
                if first { Log.warning("no leader, and this master is not in the in-sync set: waiting for one that is", ["set": "\(record.members + [record.leader])"]) }
                return
            }
            try campaign(lease: lease, sync: sync, record: record)
        } catch {
            Log.debug("group: \(error)")
        }
    }

    /// How long after a renewal was sent the lease surely still holds.
    private var surelyValidFor: Double { Double(configuration.leaseTTL) - max(0.5, Double(configuration.leaseTTL) / 5) }

    /// Grants a lease once, renews it (see the type), and keeps this master's presence key.
    private func renewLease() throws {
        let now = monotonicSeconds()
        let (lease, last, registered) = state.withLock { ($0.lease, $0.lastRenewal, $0.registered) }
        guard let lease else {
            let granted = try etcd.grantLease(ttl: configuration.leaseTTL)
            state.withLock {
                $0.lease = granted
                $0.lastRenewal = now
                $0.leaseSurelyValidUntil = now + surelyValidFor
                $0.registered = false
            }
            return try renewLease()
        }
        if now - last >= min(1, Double(configuration.leaseTTL) / 4) {
            do {
                _ = try etcd.keepAlive(lease)
                state.withLock {
                    $0.lastRenewal = now
                    $0.leaseSurelyValidUntil = now + surelyValidFor
                }
            } catch Etcd.Failure.leaseExpired {
                if isLeader { loseLead("its lease in etcd expired") }
                state.withLock { $0.lease = nil }
                return
            }
        }
        if !registered {
            try etcd.put(keys.member(url), Array(url.utf8), lease: lease)
            state.withLock { $0.registered = true }
        }
    }

    /// Tries to take the lead: only if no one holds it and the in-sync set is the one this
    /// master read (so no leader changed it meanwhile).
    private func campaign(lease: Int64, sync: Etcd.Entry?, record: SyncRecord?) throws {
        follower.pause()
        defer { follower.resume() }
        let epoch = max(record?.epoch ?? 0, try index.epochHistory().current) + 1
        let mine = LeaderRecord(url: url, epoch: epoch, lease: lease)
        let newSet = SyncRecord(epoch: epoch, leader: url, members: [])
        let unchanged: Etcd.Compare = sync.map { .modRevision(keys.sync, equals: $0.modRevision) } ?? .createRevision(keys.sync, equals: 0)
        let result = try etcd.transaction(
            if: [.createRevision(keys.leader, equals: 0), unchanged],
            then: [.put(keys.leader, try Array(JSONEncoder().encode(mine)), lease: lease),
                   .put(keys.sync, try Array(JSONEncoder().encode(newSet)), lease: nil)])
        guard result.succeeded else { return }
        promote(epoch)
    }

    /// Becomes the leader of `epoch`. Writes are held for half a sync timeout: a standby
    /// that saw no leader may answer reads from its copy that long, and must not miss an
    /// acknowledged write while it does.
    private func promote(_ epoch: UInt64) {
        follower.pause() // for good: the follower never applies on a leader
        let now = monotonicSeconds()
        // Standbys of the previous leader may answer reads for half a sync timeout more, and
        // they held what it last marked visible to this one: nothing beyond is shown before
        // then, here (the fence stays until `tick` clears it) or on the standbys.
        shipping.holdVisibility(at: min(index.db.latestSequence, fence.lastMark), for: configuration.syncTimeout / 2)
        state.withLock {
            $0.epoch = epoch
            $0.leader = nil
            $0.holdUntil = now + configuration.syncTimeout / 2
            $0.readLeaseUntil = 0
        }
        leading.store(true, ordering: .releasing)
        do {
            try index.beginEpoch(epoch)
            try promoted()
        } catch {
            loseLead("it could not take over: \(error)")
        }
        Log.info("leading the master group", ["group": "\(configuration.name)", "epoch": "\(epoch)"])
    }

    private func loseLead(_ why: String) -> Never {
        leading.store(false, ordering: .releasing)
        Log.error("this master lost the lead of group \(configuration.name): \(why); exiting so that a fresh process rejoins as a standby")
        exit(75)
    }

    /// Records the in-sync set, only while this master still holds the leader key under its
    /// lease. A set without someone who was in it holds acknowledgements (see `servesReads`).
    private func recordInSync(_ members: [String]) throws {
        let (lease, epoch, previous) = state.withLock { ($0.lease, $0.epoch, $0.recordedSet) }
        guard isLeader, let lease else { throw HTTPError(503, "not the leader") }
        let record = SyncRecord(epoch: epoch, leader: url, members: members)
        // Lease ids are unique: the leader key under this master's lease means it still leads.
        let result = try etcd.transaction(if: [.lease(keys.leader, equals: lease)],
                                          then: [.put(keys.sync, try Array(JSONEncoder().encode(record)), lease: nil)])
        guard result.succeeded else { loseLead("etcd no longer names it leader") }
        let now = monotonicSeconds()
        state.withLock { state in
            if !Set(previous).isSubset(of: members) { state.holdUntil = max(state.holdUntil, now + configuration.syncTimeout / 2) }
            state.recordedSet = members
        }
    }

    // MARK: What clients see

    /// Where a request this master does not answer goes: the same target on the leader
    /// (`307`, so a body is sent again), or `503` while there is none.
    func sendToLeader(_ request: HTTPRequest) -> HTTPResponse {
        guard let leader = leader else {
            var answer = HTTPResponse.text(503, "the master group has no leader right now; retry shortly")
            answer.headers.set("Retry-After", "1")
            return answer
        }
        return .redirect(307, to: leader.url + request.target)
    }

    /// `GET /admin/masters`: the leader's view on the leader, this master's own elsewhere.
    func mastersView() throws -> ClusterStatus.Group {
        // Without etcd the view is this master's alone, not an error.
        let present = ((try? etcd.list(prefix: keys.members)) ?? []).map { String(decoding: $0.value, as: UTF8.self) }
        if isLeader {
            let standbys = Dictionary(shipping.view.map { ($0.url, $0) }, uniquingKeysWith: { a, _ in a })
            var masters = [ClusterStatus.Group.Member(url: url, role: "leader", inSync: true, lagMs: 0)]
            for other in Set(present).union(standbys.keys).subtracting([url]).sorted() {
                let seen = standbys[other]
                masters.append(.init(url: other, role: "standby", inSync: seen?.inSync ?? false, lagMs: seen?.lagMilliseconds ?? 0))
            }
            return ClusterStatus.Group(group: configuration.name, leader: url, epoch: epoch, masters: masters)
        }
        let leader = self.leader
        var masters: [ClusterStatus.Group.Member] = []
        for other in Set(present).union([url]).union(leader.map { [$0.url] } ?? []).sorted() {
            let role = other == leader?.url ? "leader" : "standby"
            masters.append(.init(url: other, role: role, inSync: other == url ? servesReads : role == "leader", lagMs: 0))
        }
        return ClusterStatus.Group(group: configuration.name, leader: leader?.url, epoch: leader?.epoch ?? epoch, masters: masters)
    }
}
