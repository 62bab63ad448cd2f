/// Everything `master` is started with.
public struct MasterConfiguration {
    public var server = HTTPServer.Configuration(host: "0.0.0.0", port: 6000)
    public var databasePath = ""
    public var volumes: [String] = []
    public var replicas = 1
    /// The URL volumes use to reach this master (for commits).
    public var advertisedURL = ""
    /// How long a write ticket stays valid: an upload must be committed within it, and a
    /// tombstone is kept at least this long so no older write can resurrect its key.
    public var ticketLifetime = 3600.0
    public var healthInterval = 1.0

    public init() {}

    static let summary = "Kalavara master: keeps the index of keys and redirects clients to volumes."

    static func options() -> CommandLineOptions {
        CommandLineOptions(command: "master", summary: summary, options: HTTPServer.Configuration.commandLineOptions(defaultPort: 6000) + [
            .init(["-d", "--db"], value: "DIR", help: "RocksDB index directory (created if missing). Required."),
            .init(["-v", "--volumes"], value: "URL", arity: .many,
                  help: "Volume base URLs, e.g. http://127.0.0.1:7000. More can be added at run time."),
            .init(["--replicas"], value: "N", default: "1", help: "Copies of each value."),
            .init(["--advertise"], value: "URL",
                  help: "This master's URL as volumes reach it (default: http://127.0.0.1:PORT, or http://BIND:PORT)."),
            .init(["--ticket-lifetime"], value: "SECONDS", default: "3600",
                  help: "Time allowed between a PUT's redirect and its commit."),
        ])
    }

    /// Parses the command line. Throws `CommandLineOptions.UsageError`; returns nil for --help.
    public static func parse(_ arguments: [String]) throws -> MasterConfiguration? {
        var options = options()
        try options.parse(arguments)
        if options.helpRequested {
            print(options.usage)
            return nil
        }
        var configuration = MasterConfiguration()
        configuration.server = try HTTPServer.Configuration(parsed: options)
        configuration.databasePath = try options.requiredString("--db")
        configuration.volumes = try options.strings("--volumes").map { url in
            guard let normal = VolumeRegistry.normalize(url) else {
                throw CommandLineOptions.UsageError("not a volume base URL (want http://host:port): \(url)")
            }
            return normal
        }
        configuration.replicas = try options.integer("--replicas", in: 1...16)!
        configuration.ticketLifetime = try options.seconds("--ticket-lifetime")!
        if let advertised = options.string("--advertise") {
            guard let normal = VolumeRegistry.normalize(advertised) else {
                throw CommandLineOptions.UsageError("--advertise wants http://host:port, not \(advertised)")
            }
            configuration.advertisedURL = normal
        } else {
            let bind = configuration.server.host
            let host = ["0.0.0.0", "::", "127.0.0.1"].contains(bind) ? "127.0.0.1" : bind
            configuration.advertisedURL = "http://\(host):\(configuration.server.port)"
        }
        return configuration
    }
}
