import Foundation

/// The master daemon: index, volume registry, version clock, health checks and the HTTP
/// routes, wired together. `master/main.swift` only parses flags and calls `run`.
public final class Master {
    public let configuration: MasterConfiguration
    let index: Index
    let registry: VolumeRegistry
    let clock: VersionClock
    let keyLocks = StripedLock()
    let metrics = Metrics()
    private let health: HealthMonitor
    private let tombstoneSweep: DispatchSourceTimer
    private var removals: RemovalWorker!
    private var server: HTTPServer!

    public init(configuration: MasterConfiguration) throws {
        self.configuration = configuration
        index = try Index(path: configuration.databasePath)
        registry = try VolumeRegistry(index: index, seeds: configuration.volumes)
        let index = self.index
        clock = try VersionClock(storedCeiling: index.versionCeiling(), persistCeiling: { try index.setVersionCeiling($0) })
        health = HealthMonitor(registry: registry, masterURL: configuration.advertisedURL,
                               interval: configuration.healthInterval)
        tombstoneSweep = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "tombstones"))
        metrics.gauge("kalavara_index_keys_estimate", "RocksDB's estimate of index records") { [index] in
            Double(index.estimatedKeyCount)
        }
        metrics.gauge("kalavara_volumes_live", "volumes answering health checks") { [registry] in
            Double(registry.liveURLs.count)
        }
    }

    /// Starts listening and the background work.
    public func start() throws {
        server = HTTPServer(configuration: configuration.server, handler: { [unowned self] request, body in
            let response = try self.route(request, body)
            metrics.countRequest(method: request.method, status: response.status)
            return response
        }, quickHandler: { [unowned self] request in
            guard let response = self.quickRoute(request) else { return nil }
            metrics.countRequest(method: request.method, status: response.status)
            return response
        })
        try server.start()
        health.start()
        removals = RemovalWorker(master: self, interval: configuration.healthInterval)
        removals.start()
        let interval = max(1, min(60, configuration.ticketLifetime / 4))
        tombstoneSweep.schedule(deadline: .now() + interval, repeating: interval)
        tombstoneSweep.setEventHandler { [weak self] in self?.expireTombstones() }
        tombstoneSweep.resume()
        Log.info("listening on \(configuration.server.host):\(server.boundPort), index \(configuration.databasePath), "
                 + "\(registry.all.count) volume(s), replicas \(configuration.replicas)")
    }

    /// Stops accepting, lets requests in flight finish, and closes the index cleanly.
    public func stop() {
        health.stop()
        removals?.stop()
        tombstoneSweep.cancel()
        server?.stop()
        index.close()
    }

    /// Runs until SIGINT/SIGTERM, then stops gracefully; a second signal exits at once.
    public static func run(_ configuration: MasterConfiguration) -> Int32 {
        Daemon.run("master") {
            let master = try Master(configuration: configuration)
            try master.start()
            return master.stop
        }
    }
}
