import ArgumentParser
import KalavaraHTTP
import KalavaraSupport
import Logging

/// Everything `master` is started with.
public struct MasterConfiguration: Sendable {
    var server = HTTPServer.Configuration(host: "0.0.0.0", port: 6000)
    var databasePath = ""
    var volumes: [String] = []
    var replicas = 1
    /// The URL volumes use to reach this master (for commits).
    var advertisedURL = ""
    /// How long a write ticket stays valid: an upload must be committed within it, and a
    /// tombstone is kept at least this long so no older write can resurrect its key.
    var ticketLifetime = 3600.0
    var healthInterval = 1.0
    /// Seconds a volume may be down before it is `out` and its keys are re-replicated.
    var outAfter = 600.0
    /// Repair copies in flight at most, and their byte rate (0: unlimited).
    var repairCopies = 4
    var repairRate = 100.0 * 1024 * 1024
    /// A full placement pass at least this often, changes or not.
    var repairInterval = 3600.0
    /// Index records a placement pass examines per second at most (0: unlimited).
    var repairScanRate = 500_000.0
    /// `--secret-file`: a signed cluster (nil: open).
    var secretFile: String?
    /// `--auth-file`: client credentials (nil: no client authentication).
    var authFile: String?
    /// How long a read ticket (a GET redirect) stays valid in a signed cluster.
    var readTicketLifetime = 600.0
    /// The index's block cache in bytes (`--index-cache`).
    var indexCacheBytes = Index.defaultCacheBytes
    /// Free bytes writes leave on the index's filesystem (`--index-reserve`).
    var indexReserveBytes = Index.defaultReserveBytes
    /// The memory all listings in flight may hold together (`--listing-memory`).
    var listingMemoryBytes = 64 << 20
    /// `--etcd`: a member of a master group (nil: a single master, leading always).
    var group: MasterGroup.Configuration?

    init() {}

    /// Parses a command line (without the program name) into a configuration; throws what
    /// argument-parser throws for a bad one. For tests and tools; `main` uses `Daemon.parse`.
    static func parse(_ arguments: [String]) throws -> MasterConfiguration {
        let command = try MasterCommand.parse(arguments)
        try command.checkRequired()
        return command.configuration()
    }
}

/// `master`'s command line.
public struct MasterCommand: DaemonCommand {
    public static let configuration = CommandConfiguration(
        commandName: "master",
        abstract: "Kalavara master: keeps the index of keys and redirects clients to volumes.",
        discussion: "Usage: master -p PORT -d DIR [-v URL ...] [options]",
        version: Kalavara.version)

    @Option(name: [.customShort("p"), .customLong("port")], help: ArgumentHelp("Port to listen on.", valueName: "port"))
    var port = 6000

    @Option(name: [.customShort("d"), .customLong("db")],
            help: ArgumentHelp("RocksDB index directory (created if missing). Required.", valueName: "dir"))
    var db: String?

    @Option(name: [.customShort("v"), .customLong("volumes")], parsing: .upToNextOption,
            help: ArgumentHelp("Volume base URLs, e.g. http://127.0.0.1:7000. More can be added at run time.", valueName: "url"))
    var volumes: [String] = []

    @Option(name: .customLong("replicas"), help: ArgumentHelp("Copies of each value.", valueName: "n"))
    var replicas = 1

    @Option(name: .customLong("advertise"),
            help: ArgumentHelp("This master's URL as volumes reach it (default: http://127.0.0.1:PORT, or http://BIND:PORT).",
                               valueName: "url"))
    var advertise: String?

    @Option(name: .customLong("ticket-lifetime"),
            help: ArgumentHelp("Time allowed between a PUT's redirect and its commit.", valueName: "seconds"))
    var ticketLifetime = 3600.0

    @Option(name: .customLong("out-after"),
            help: ArgumentHelp("Seconds a volume may be down before its keys are re-replicated elsewhere.", valueName: "seconds"))
    var outAfter = 600.0

    @Option(name: .customLong("repair-copies"), help: ArgumentHelp("Repair copies in flight at most.", valueName: "n"))
    var repairCopies = 4

    @Option(name: .customLong("index-cache"),
            help: ArgumentHelp("Memory for the index's block cache, in MiB (about 40 bytes a key: 1024 holds some 25M keys).",
                               valueName: "mib"))
    var indexCache = Index.defaultCacheBytes >> 20

    @Option(name: .customLong("index-reserve"),
            help: ArgumentHelp("Free space to keep on the index's filesystem, in MiB: writes that would leave less get 507.",
                               valueName: "mib"))
    var indexReserve = Index.defaultReserveBytes >> 20

    @Option(name: .customLong("listing-memory"),
            help: ArgumentHelp("Memory all listings in flight may hold, in MiB (2 a listing; past it a listing waits, then gets 503).",
                               valueName: "mib"))
    var listingMemory = 64

    @Option(name: .customLong("repair-rate"),
            help: ArgumentHelp("Repair copy bandwidth in MiB/s (0: unlimited).", valueName: "mib-per-second"))
    var repairRate = 100.0

    @Option(name: .customLong("repair-every"),
            help: ArgumentHelp("Seconds between full placement passes when nothing triggers one.", valueName: "seconds"))
    var repairEvery = 3600.0

    @Option(name: .customLong("repair-scan-rate"),
            help: ArgumentHelp("Index records a placement pass examines per second at most (0: unlimited).", valueName: "keys"))
    var repairScanRate = 500_000.0

    @Option(name: .customLong("auth-file"),
            help: ArgumentHelp("Client credentials, NAME SECRET RIGHTS per line (read,write,admin): ask for HTTP Basic. Re-read on SIGHUP.",
                               valueName: "path"))
    var authFile: String?

    @Option(name: .customLong("read-ticket-lifetime"),
            help: ArgumentHelp("With --secret-file: how long a GET redirect stays valid.", valueName: "seconds"))
    var readTicketLifetime = 600.0

    @Option(name: .customLong("etcd"),
            help: ArgumentHelp("etcd endpoints (comma-separated): form a master group with the masters using them.", valueName: "urls"))
    var etcd: String?

    @Option(name: .customLong("group"), help: ArgumentHelp("With --etcd: the group's name, its keys' prefix in etcd.", valueName: "name"))
    var group = "kalavara"

    @Option(name: .customLong("lease-ttl"), help: ArgumentHelp("With --etcd: the leader's lease in etcd.", valueName: "seconds"))
    var leaseTTL = 5

    @Option(name: .customLong("sync-timeout"),
            help: ArgumentHelp("With --etcd: how long a write waits for an in-sync standby before it leaves the set.", valueName: "seconds"))
    var syncTimeout = 2.0

    @OptionGroup var server: ServerOptions

    public init() {}

    public mutating func validate() throws {
        try ServerOptions.checkPort(port)
        try ServerOptions.checkSeconds("--read-ticket-lifetime", readTicketLifetime)
        guard (1...16).contains(replicas) else { throw ValidationError("--replicas wants a whole number in 1...16, not \(replicas)") }
        try ServerOptions.checkSeconds("--ticket-lifetime", ticketLifetime)
        try ServerOptions.checkSeconds("--out-after", outAfter)
        try ServerOptions.checkSeconds("--repair-every", repairEvery)
        guard (1...256).contains(repairCopies) else { throw ValidationError("--repair-copies wants 1...256, not \(repairCopies)") }
        guard (8...1_048_576).contains(indexCache) else { throw ValidationError("--index-cache wants MiB in 8...1048576, not \(indexCache)") }
        guard (0...1_048_576).contains(indexReserve) else { throw ValidationError("--index-reserve wants MiB in 0...1048576, not \(indexReserve)") }
        guard (2...65536).contains(listingMemory) else { throw ValidationError("--listing-memory wants MiB in 2...65536, not \(listingMemory)") }
        guard repairRate >= 0, repairRate.isFinite else { throw ValidationError("--repair-rate wants MiB/s (0 for no limit)") }
        guard repairScanRate >= 0, repairScanRate.isFinite else {
            throw ValidationError("--repair-scan-rate wants records per second (0 for no limit)")
        }
        for url in volumes where VolumeRegistry.normalize(url) == nil {
            throw ValidationError("not a volume base URL (want http://host:port): \(url)")
        }
        if let etcd {
            for endpoint in etcd.split(separator: ",") where VolumeRegistry.normalize(String(endpoint)) == nil {
                throw ValidationError("--etcd wants http://host:port[,http://host:port...], not \(endpoint)")
            }
        }
        guard !group.isEmpty, group.count <= 64, CheckpointManifest.isSafe(group) else {
            throw ValidationError("--group wants a name of 1 to 64 letters, digits and -._, not \(group)")
        }
        guard (2...600).contains(leaseTTL) else { throw ValidationError("--lease-ttl wants whole seconds in 2...600, not \(leaseTTL)") }
        guard syncTimeout >= 0.1, syncTimeout < Double(leaseTTL) else {
            throw ValidationError("--sync-timeout wants seconds from 0.1 to under --lease-ttl, not \(syncTimeout)")
        }
        if let advertise, VolumeRegistry.normalize(advertise) == nil {
            throw ValidationError("--advertise wants http://host:port, not \(advertise)")
        }
    }

    public func checkRequired() throws {
        guard db != nil else { throw ValidationError("missing required option -d/--db") }
    }

    public var logLevel: Logger.Level { server.logLevel }

    public func configuration() -> MasterConfiguration {
        var configuration = MasterConfiguration()
        configuration.server = server.configuration(port: port)
        configuration.databasePath = db ?? ""
        configuration.volumes = volumes.compactMap(VolumeRegistry.normalize)
        configuration.replicas = replicas
        configuration.ticketLifetime = ticketLifetime
        configuration.outAfter = outAfter
        configuration.repairCopies = repairCopies
        configuration.indexCacheBytes = indexCache << 20
        configuration.listingMemoryBytes = listingMemory << 20
        configuration.indexReserveBytes = indexReserve << 20
        configuration.repairRate = repairRate * 1024 * 1024
        configuration.repairInterval = repairEvery
        configuration.repairScanRate = repairScanRate
        configuration.secretFile = server.secretFile
        configuration.authFile = authFile
        configuration.readTicketLifetime = readTicketLifetime
        if let etcd {
            var group = MasterGroup.Configuration(endpoints: etcd.split(separator: ",").compactMap { VolumeRegistry.normalize(String($0)) })
            group.name = self.group
            group.leaseTTL = leaseTTL
            group.syncTimeout = syncTimeout
            configuration.group = group
        }
        if let advertise {
            configuration.advertisedURL = VolumeRegistry.normalize(advertise)!
        } else {
            let bind = configuration.server.host
            let host = ["0.0.0.0", "::", "127.0.0.1"].contains(bind) ? "127.0.0.1" : bind
            configuration.advertisedURL = "\(server.tlsCertificate == nil ? "http" : "https")://\(host):\(port)"
        }
        return configuration
    }
}
