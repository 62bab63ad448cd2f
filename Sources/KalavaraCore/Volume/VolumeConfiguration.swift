/// Everything `volume` is started with.
public struct VolumeConfiguration {
    public var port = 7000
    public var bindHost = "0.0.0.0"
    public var directory = ""
    /// The master to register with and commit to; without it, the master's URL comes
    /// from the tickets it hands out and from its health checks.
    public var masterURL: String?
    /// This volume's URL as the master should know it (`-b`); with `masterURL`, the volume
    /// registers itself at start-up and keeps re-registering as a heartbeat.
    public var selfURL: String?
    public var readTimeout = 30.0
    public var idleTimeout = 30.0
    public var maxConnections = 1024
    public var heartbeatInterval = 5.0

    public init() {}

    static func options() -> CommandLineOptions {
        CommandLineOptions(command: "volume", summary: "Kalavara volume: stores values as files and serves them.", options: [
            .init(["-p", "--port"], value: "PORT", default: "7000", help: "Port to listen on."),
            .init(["-d", "--dir"], value: "DIR", help: "Data directory (created if missing). Required."),
            .init(["-m", "--master"], value: "URL", help: "Master base URL, e.g. http://127.0.0.1:6000."),
            .init(["-b", "--base"], value: "URL", help: "This volume's base URL as the master should reach it; with -m, register there."),
            .init(["--bind"], value: "HOST", default: "0.0.0.0", help: "Address to listen on."),
            .init(["--read-timeout"], value: "SECONDS", default: "30", help: "Drop a client whose request stalls this long."),
            .init(["--idle-timeout"], value: "SECONDS", default: "30", help: "Close keep-alive connections idle this long."),
            .init(["--max-connections"], value: "N", default: "1024", help: "Open client connections at most; more get 503."),
            .init(["--heartbeat"], value: "SECONDS", default: "5", help: "How often to re-register with the master (with -m and -b)."),
        ])
    }

    /// Parses the command line. Throws `CommandLineOptions.UsageError`; returns nil for --help.
    public static func parse(_ arguments: [String]) throws -> VolumeConfiguration? {
        var options = options()
        try options.parse(arguments)
        if options.helpRequested {
            print(options.usage)
            return nil
        }
        var configuration = VolumeConfiguration()
        configuration.port = try options.integer("--port", in: 1...65535)!
        configuration.directory = try options.requiredString("--dir")
        configuration.bindHost = options.string("--bind")!
        configuration.readTimeout = try options.seconds("--read-timeout")!
        configuration.idleTimeout = try options.seconds("--idle-timeout")!
        configuration.maxConnections = try options.integer("--max-connections", in: 1...1_000_000)!
        configuration.heartbeatInterval = try options.seconds("--heartbeat")!
        for (flag, keyPath) in [("--master", \VolumeConfiguration.masterURL), ("--base", \VolumeConfiguration.selfURL)] {
            guard let text = options.string(flag) else { continue }
            guard let normal = VolumeRegistry.normalize(text) else {
                throw CommandLineOptions.UsageError("\(flag) wants http://host:port, not \(text)")
            }
            configuration[keyPath: keyPath] = normal
        }
        if configuration.selfURL != nil, configuration.masterURL == nil {
            throw CommandLineOptions.UsageError("-b needs -m: the URL is for registering with a master")
        }
        return configuration
    }
}
