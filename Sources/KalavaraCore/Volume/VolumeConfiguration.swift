import ArgumentParser
import KalavaraHTTP
import Logging

/// Everything `volume` is started with.
public struct VolumeConfiguration: Sendable {
    var server = HTTPServer.Configuration(host: "0.0.0.0", port: 7000)
    var directory = ""
    /// The masters to register with and commit to (`-m`, a comma list: any of a group's,
    /// the leader is found from them); without one, the master's URL comes from the tickets
    /// it hands out and from its health checks.
    var masterURLs: [String] = []
    /// This volume's URL as the master should know it (`-b`); with `masterURLs`, the volume
    /// registers itself at start-up and keeps re-registering as a heartbeat.
    var selfURL: String?
    var heartbeatInterval = 5.0
    /// How old an uncommitted value file must be before the volume asks the master about it
    /// and removes it if it is an orphan.
    var orphanGrace = 3600.0
    /// The background scrub's read rate (bytes/s; 0: unlimited) and how often a pass starts.
    var scrubRate = 32.0 * 1024 * 1024
    var scrubEvery = 86400.0
    /// Seconds between journal checkpoints (see `UncommittedJournal`): how long a small
    /// value's journal record may stand for its file's fsync.
    var checkpointEvery = UncommittedJournal.checkpointInterval
    /// `--secret-file`: a signed cluster (nil: open).
    var secretFile: String?
    /// `--zone`: what fails together with this volume (a host, a rack, a room). The master
    /// learns it from the health answers and keeps a key's copies in distinct zones.
    var zone = Placement.defaultZone

    init() {}

    /// Parses a command line (without the program name); throws what argument-parser throws.
    static func parse(_ arguments: [String]) throws -> VolumeConfiguration {
        let command = try VolumeCommand.parse(arguments)
        try command.checkRequired()
        return command.configuration()
    }
}

/// `volume`'s command line.
public struct VolumeCommand: DaemonCommand {
    public static let configuration = CommandConfiguration(
        commandName: "volume",
        abstract: "Kalavara volume: stores values as files and serves them.",
        discussion: "Usage: volume -p PORT -d DIR [-m MASTER -b SELF] [options]",
        version: Kalavara.version)

    @Option(name: [.customShort("p"), .customLong("port")], help: ArgumentHelp("Port to listen on.", valueName: "port"))
    var port = 7000

    @Option(name: [.customShort("d"), .customLong("dir")], help: ArgumentHelp("Data directory (created if missing). Required.", valueName: "dir"))
    var dir: String?

    @Option(name: [.customShort("m"), .customLong("master")],
            help: ArgumentHelp("Master base URL, e.g. http://127.0.0.1:6000 (a group's: several, comma-separated).", valueName: "url"))
    var master: String?

    @Option(name: [.customShort("b"), .customLong("base")],
            help: ArgumentHelp("This volume's base URL as the master should reach it; with -m, register there.", valueName: "url"))
    var base: String?

    @Option(name: .customLong("heartbeat"), help: ArgumentHelp("How often to re-register with the master (with -m and -b).", valueName: "seconds"))
    var heartbeat = 5.0

    @Option(name: .customLong("orphan-grace"),
            help: ArgumentHelp("Age at which an uncommitted value file is checked with the master and removed if orphaned.",
                               valueName: "seconds"))
    var orphanGrace = 3600.0

    @Option(name: .customLong("scrub-rate"),
            help: ArgumentHelp("Read rate of the background scrub in MiB/s (0: unlimited).", valueName: "mib-per-second"))
    var scrubRate = 32.0

    @Option(name: .customLong("scrub-every"),
            help: ArgumentHelp("Seconds between scrub passes (each reads and checks every value file).", valueName: "seconds"))
    var scrubEvery = 86400.0

    @Option(name: .customLong("checkpoint-every"),
            help: ArgumentHelp("Seconds between journal checkpoints (a syncfs that makes journaled small values' files durable).",
                               valueName: "seconds"))
    var checkpointEvery = UncommittedJournal.checkpointInterval

    @Option(name: .customLong("zone"),
            help: ArgumentHelp("This volume's failure domain (host, rack, room): a key's copies go to distinct zones. "
                               + "Letters, digits, '.', '_', '-', ':'; at most 64.", valueName: "name"))
    var zone = Placement.defaultZone

    @OptionGroup var server: ServerOptions

    public init() {}

    public mutating func validate() throws {
        try ServerOptions.checkPort(port)
        try ServerOptions.checkSeconds("--heartbeat", heartbeat)
        try ServerOptions.checkSeconds("--orphan-grace", orphanGrace)
        try ServerOptions.checkSeconds("--scrub-every", scrubEvery)
        try ServerOptions.checkSeconds("--checkpoint-every", checkpointEvery)
        guard Placement.isValidZone(zone) else {
            throw ValidationError("--zone wants 1 to 64 letters, digits, '.', '_', '-' or ':', not \(zone.prefix(80))")
        }
        guard scrubRate >= 0, scrubRate.isFinite else { throw ValidationError("--scrub-rate wants MiB/s (0 for no limit)") }
        let masters = master.map { $0.split(separator: ",").map(String.init) } ?? []
        for (flag, value) in masters.map({ ("--master", $0) }) + [("--base", base)] {
            if let value, VolumeRegistry.normalize(value) == nil { throw ValidationError("\(flag) wants http://host:port, not \(value)") }
        }
        if base != nil, master == nil { throw ValidationError("-b needs -m: the URL is for registering with a master") }
    }

    public func checkRequired() throws {
        guard dir != nil else { throw ValidationError("missing required option -d/--dir") }
    }

    public var logLevel: Logger.Level { server.logLevel }

    public func configuration() -> VolumeConfiguration {
        var configuration = VolumeConfiguration()
        configuration.server = server.configuration(port: port)
        configuration.directory = dir ?? ""
        configuration.masterURLs = (master?.split(separator: ",") ?? []).compactMap { VolumeRegistry.normalize(String($0)) }
        configuration.selfURL = base.flatMap(VolumeRegistry.normalize)
        configuration.heartbeatInterval = heartbeat
        configuration.orphanGrace = orphanGrace
        configuration.scrubRate = scrubRate * 1024 * 1024
        configuration.scrubEvery = scrubEvery
        configuration.checkpointEvery = checkpointEvery
        configuration.secretFile = server.secretFile
        configuration.zone = zone
        return configuration
    }
}
