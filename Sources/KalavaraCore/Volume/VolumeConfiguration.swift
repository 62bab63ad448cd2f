/// Everything `volume` is started with.
public struct VolumeConfiguration {
    public var server = HTTPServer.Configuration(host: "0.0.0.0", port: 7000)
    public var directory = ""
    /// The master to register with and commit to; without it, the master's URL comes
    /// from the tickets it hands out and from its health checks.
    public var masterURL: String?
    /// This volume's URL as the master should know it (`-b`); with `masterURL`, the volume
    /// registers itself at start-up and keeps re-registering as a heartbeat.
    public var selfURL: String?
    public var heartbeatInterval = 5.0
    /// How old an uncommitted value file must be before the volume asks the master about it
    /// and removes it if it is an orphan.
    public var orphanGrace = 3600.0

    public init() {}

    static func options() -> CommandLineOptions {
        CommandLineOptions(command: "volume", summary: "Kalavara volume: stores values as files and serves them.", options: HTTPServer.Configuration.commandLineOptions(defaultPort: 7000) + [
            .init(["-d", "--dir"], value: "DIR", help: "Data directory (created if missing). Required."),
            .init(["-m", "--master"], value: "URL", help: "Master base URL, e.g. http://127.0.0.1:6000."),
            .init(["-b", "--base"], value: "URL", help: "This volume's base URL as the master should reach it; with -m, register there."),
            .init(["--heartbeat"], value: "SECONDS", default: "5", help: "How often to re-register with the master (with -m and -b)."),
            .init(["--orphan-grace"], value: "SECONDS", default: "3600",
                  help: "Age at which an uncommitted value file is checked with the master and removed if orphaned."),
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
        configuration.server = try HTTPServer.Configuration(parsed: options)
        configuration.directory = try options.requiredString("--dir")
        configuration.heartbeatInterval = try options.seconds("--heartbeat")!
        configuration.orphanGrace = try options.seconds("--orphan-grace")!
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
