import Foundation

/// The volume daemon: a file store served over HTTP. `volume/main.swift` only parses flags
/// and calls `run`.
public final class Volume {
    public let configuration: VolumeConfiguration
    let store: FileStore
    let master: MasterLink
    let metrics = Metrics()
    private var server: HTTPServer!

    public init(configuration: VolumeConfiguration) throws {
        self.configuration = configuration
        store = try FileStore(root: configuration.directory)
        master = MasterLink(configuredMaster: configuration.masterURL, selfURL: configuration.selfURL)
        metrics.gauge("kalavara_free_bytes", "free bytes on the data filesystem") { [store] in Double(store.freeBytes()) }
    }

    public func start() throws {
        var http = HTTPServer.Configuration(host: configuration.bindHost, port: configuration.port)
        http.readTimeout = configuration.readTimeout
        http.idleTimeout = configuration.idleTimeout
        http.maxConnections = configuration.maxConnections
        server = HTTPServer(configuration: http) { [unowned self] request, body in
            let response = try self.route(request, body)
            metrics.countRequest(method: request.method, status: response.status)
            return response
        }
        try server.start()
        master.startHeartbeat(interval: configuration.heartbeatInterval)
        Log.info("listening on \(configuration.bindHost):\(server.boundPort), data in \(configuration.directory)")
    }

    public func stop() {
        master.stop()
        server?.stop()
    }

    /// Runs until SIGINT/SIGTERM, then stops gracefully; a second signal exits at once.
    public static func run(_ configuration: VolumeConfiguration) -> Int32 {
        Log.component = "volume"
        do {
            let volume = try Volume(configuration: configuration)
            try volume.start()
            ShutdownSignal.wait()
            Log.info("stopping")
            volume.stop()
            Log.info("stopped")
            return 0
        } catch {
            Log.error("\(error)")
            return 2
        }
    }
}
