import Foundation
import KalavaraHTTP
import KalavaraSupport
import Logging
import Prometheus
import Synchronization

/// The master daemon: index, volume registry, version clock, health checks and the HTTP
/// routes, wired together. `master/main.swift` only parses flags and calls `run`.
///
/// Sendable by hand: every stored property is Sendable or thread-safe, except `removals`
/// and `server`, which `start` sets once before the listener admits anyone.
public final class Master: @unchecked Sendable {
    let configuration: MasterConfiguration
    let index: Index
    /// What listings in flight may hold (see `ListingBudget`).
    let listings: ListingBudget
    let registry: VolumeRegistry
    let clock: VersionClock
    let keyLocks = StripedLock()
    let metrics = Metrics()
    /// Who may call what: the cluster secret and the client credentials.
    let gate: AccessGate
    /// Signed clusters: read tickets, signed once per key and version every 30 s.
    let readTickets: ReadTicketCache?
    let commits: (put: Counter, delete: Counter, holders: Counter)
    private let health: HealthMonitor
    /// Healing: the placement reconciler and the index rebuild.
    private(set) var reconciler: Reconciler!
    private(set) var rebuilder: Rebuilder!
    /// True while a rebuild runs: keys not found yet may exist (reads answer 503, not 404).
    let rebuilding = Atomic(false)
    /// Turns for read redirects: GETs rotate among the live holders of the current version,
    /// so a client retrying after a hung holder reaches another copy.
    let readTurns = Atomic(0)
    var isRebuilding: Bool { rebuilding.load(ordering: .relaxed) }
    /// Expires tombstones older than the ticket lifetime (see `expireTombstones`).
    private let tombstoneSweep: BackgroundLoop<Void>
    private var removals: RemovalWorker!
    private(set) var server: HTTPServer!
    /// `--etcd`: the master group this master belongs to (nil: it alone leads, always).
    private(set) var group: MasterGroup?
    /// In a group: the checkpoints standbys copy the index from.
    private(set) var checkpoints: CheckpointShelf?
    /// When a standby last reloaded the volume table from its index (monotonic seconds).
    private let registryReloaded = Mutex(-Double.infinity)

    init(configuration: MasterConfiguration) throws {
        self.configuration = configuration
        listings = ListingBudget(bytes: configuration.listingMemoryBytes)
        gate = try AccessGate(configuration: configuration.secretFile, authFile: configuration.authFile)
        readTickets = gate.secret.map { ReadTicketCache(secret: $0, lifetime: configuration.readTicketLifetime) }
        index = try Index(path: configuration.databasePath, metrics: metrics, cacheBytes: configuration.indexCacheBytes,
                          reserveBytes: configuration.indexReserveBytes,
                          keepLog: configuration.group == nil ? nil : Self.keptLog)
        // In a group only the leader writes the index: the seeds are added when this master leads.
        registry = try VolumeRegistry(index: index, seeds: configuration.group == nil ? configuration.volumes : [],
                                      outAfter: configuration.outAfter)
        let index = self.index
        clock = try VersionClock(storedCeiling: index.versionCeiling(), persistCeiling: { try index.setVersionCeiling($0) })
        health = HealthMonitor(registry: registry, masterURL: configuration.advertisedURL,
                               interval: configuration.healthInterval, secret: gate.secret, replicas: configuration.replicas)
        tombstoneSweep = BackgroundLoop("tombstones", schedule: .every(max(1, min(60, configuration.ticketLifetime / 4))))
        commits = (metrics.counter("kalavara_commits_total", "Commits recorded in the index", labels: [("op", "put")]),
                   metrics.counter("kalavara_commits_total", "Commits recorded in the index", labels: [("op", "delete")]),
                   metrics.counter("kalavara_commits_total", "Commits recorded in the index", labels: [("op", "holders")]))
        metrics.gauge("kalavara_index_keys_estimate", "RocksDB's estimate of index records") { [index] in
            Double(index.estimatedKeyCount)
        }
        metrics.gauge("kalavara_volumes_live", "Volumes answering health checks") { [registry] in
            Double(registry.liveURLs.count)
        }
        metrics.gauge("kalavara_volume_zones", "Zones the volumes in service span (fewer than --replicas: copies share zones)") {
            [registry] in Double(registry.zoneCount)
        }
        for state in [VolumeRegistry.State.up, .down, .out, .draining] {
            metrics.gauge("kalavara_volumes", "Volumes by state", labels: [("state", state.rawValue)]) { [registry] in
                let now = monotonicSeconds()
                return Double(registry.present.filter { $0.state(now: now, outAfter: registry.outAfter) == state }.count)
            }
        }
        reconciler = Reconciler(master: self, secret: gate.secret, metrics: metrics, replicas: configuration.replicas,
                                copiesInFlight: configuration.repairCopies, bytesPerSecond: configuration.repairRate,
                                interval: configuration.repairInterval, keysPerSecond: configuration.repairScanRate)
        rebuilder = Rebuilder(master: self, secret: gate.secret)
        metrics.gauge("kalavara_index_disk_free_bytes", "Free bytes on the index's filesystem") { [path = configuration.databasePath] in
            Double(FileStore.freeBytes(at: path))
        }
        if let settings = configuration.group {
            checkpoints = CheckpointShelf(index: index)
            let group = try MasterGroup(settings, url: configuration.advertisedURL, index: index, secret: gate.secret,
                                        promoted: { [unowned self] in try takeOver() })
            group.follower.applied = { [weak self] in self?.followedLeader() }
            self.group = group
        }
    }

    /// The log a group's leader keeps for standbys that were away: an hour, up to 1 GiB.
    /// One further behind copies a checkpoint instead.
    static let keptLog = (seconds: UInt64(3600), megabytes: UInt64(1024))

    /// Starts listening and the background work.
    func start() throws {
        server = HTTPServer(configuration: configuration.server, router: router, metrics: metrics)
        try server.start()
        server.reloadTLSOnHangup()
        registry.all.forEach { server.trustPeer(url: $0.url) }
        gate.announce()
        health.start()
        Log.info("listening on \(configuration.server.host):\(server.boundPort), index \(configuration.databasePath), "
                 + "\(registry.all.count) volume(s), replicas \(configuration.replicas)"
                 + (group.map { ", group \($0.configuration.name) on etcd \($0.configuration.endpoints.joined(separator: ","))" } ?? ""))
        if let group { group.start() } else { try lead() }
    }

    /// Starts what only a leader does: removals, placement passes, an interrupted rebuild,
    /// tombstone expiry. A single master does from the start; a group's, once it leads.
    private func lead() throws {
        removals = RemovalWorker(master: self, interval: configuration.healthInterval)
        removals.start()
        reconciler.start()
        if try index.rebuildPending() {
            Log.warning("an index rebuild was interrupted: resuming it")
            try rebuilder.start()
        }
        // No expiry while a rebuild runs: a delete made meanwhile must outlive the inventory
        // of every volume, or an older copy found late would bring its key back.
        tombstoneSweep.start { [weak self] in
            if self?.isRebuilding == false { self?.expireTombstones() }
        }
    }

    /// A standby became the group's leader: what it derives from the index is read again
    /// (the volume table, the clock's ceiling, which its predecessor kept raising), the
    /// seeds are added, and the leader's work starts.
    private func takeOver() throws {
        try registry.reload()
        for seed in configuration.volumes { try registry.add(seed, explicit: false) }
        try clock.resume(atCeiling: index.versionCeiling())
        registry.all.forEach { server.trustPeer(url: $0.url) }
        try lead()
    }

    /// A standby applied some of the leader's log: volumes it added are known here too
    /// (read at most ten times a second: a redirect to a volume added that recently waits).
    private func followedLeader() {
        let now = monotonicSeconds()
        guard registryReloaded.withLock({ last in
            guard now - last >= 0.1 else { return false }
            last = now
            return true
        }) else { return }
        do {
            try registry.reload()
            registry.all.forEach { server?.trustPeer(url: $0.url) }
        } catch {
            Log.warning("could not reload the volume table from the index: \(error)")
        }
    }

    /// Stops accepting, lets requests in flight finish, and closes the index cleanly.
    func stop() {
        group?.stop()
        health.stop()
        reconciler?.stop()
        rebuilder?.stop()
        removals?.stop()
        tombstoneSweep.stop()
        server?.stop()
        index.close()
    }

    /// Runs until SIGINT/SIGTERM, then stops gracefully; a second signal exits at once.
    public static func run(_ configuration: MasterConfiguration, logLevel: Logger.Level = .info) -> Int32 {
        Daemon.run("master", logLevel: logLevel) {
            let master = try Master(configuration: configuration)
            master.metrics.bootstrapSwiftMetrics()
            try master.start()
            return master.stop
        }
    }
}
