import ArgumentParser
import Foundation
import KalavaraHTTP
import KalavaraSupport
import Logging

/// The release, for `--version`.
public enum Kalavara {
    public static let version = "0.5.0"
}

/// The flags every daemon shares (besides its port, whose default differs), parsed by
/// swift-argument-parser.
public struct ServerOptions: ParsableArguments {
    @Option(name: .customLong("bind"), help: ArgumentHelp("Address to listen on.", valueName: "host"))
    var bind = "0.0.0.0"

    @Option(name: .customLong("read-timeout"), help: ArgumentHelp("Drop a client whose request stalls this long.", valueName: "seconds"))
    var readTimeout = 30.0

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Close keep-alive connections idle this long.", valueName: "seconds"))
    var idleTimeout = 30.0

    @Option(name: .customLong("head-timeout"),
            help: ArgumentHelp("Drop a new connection that has not sent a complete request head this long after connecting.",
                               valueName: "seconds"))
    var headTimeout = 10.0

    @Option(name: .customLong("min-body-rate"),
            help: ArgumentHelp("Drop an upload whose body arrives slower than this, in bytes/s, after its first 10 s (0: no floor).",
                               valueName: "bytes"))
    var minBodyRate = 1024.0

    @Option(name: .customLong("max-connections"),
            help: ArgumentHelp("Open client connections at most; past it the longest-idle one is closed, and only when all are busy does a new one get 503.",
                               valueName: "n"))
    var maxConnections = 1024

    @Option(name: .customLong("max-connections-per-address"),
            help: ArgumentHelp("Open connections from one client address at most; past it that address's longest-idle one is closed (503 if all are busy).",
                               valueName: "n"))
    var maxConnectionsPerAddress = 256

    @Option(name: .customLong("access-log"),
            help: ArgumentHelp("A log line per request: off, errors (4xx and 5xx answers) or all. Refusals' reasons are logged at info in any case.",
                               valueName: "mode"))
    var accessLog: AccessLogMode = .errors

    @Option(name: .customLong("secret-file"),
            help: ArgumentHelp("The cluster secret (the file's bytes, at least 16): sign tickets and calls between daemons, refuse unsigned ones.",
                               valueName: "path"))
    public var secretFile: String?

    @Option(name: .customLong("tls-cert"),
            help: ArgumentHelp("Certificate chain (PEM, leaf first): the port speaks HTTPS only. Needs --tls-key; SIGHUP reloads both.",
                               valueName: "path"))
    public var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("The private key of --tls-cert (PEM).", valueName: "path"))
    var tlsKey: String?

    @Option(name: .customLong("tls-ca"),
            help: ArgumentHelp("CA certificates (PEM) that other daemons' certificates are verified against (default: the system's trust store).",
                               valueName: "path"))
    var tlsAuthority: String?

    @Option(name: .customLong("log-level"),
            help: ArgumentHelp("Lowest level logged (KALAVARA_LOG=debug also lowers it).", valueName: "level"))
    public var logLevel: Logger.Level = ProcessInfo.processInfo.environment["KALAVARA_LOG"] == "debug" ? .debug : .info

    public init() {}

    public mutating func validate() throws {
        for (flag, value) in [("--read-timeout", readTimeout), ("--idle-timeout", idleTimeout), ("--head-timeout", headTimeout)] {
            try Self.checkSeconds(flag, value)
        }
        guard (tlsCertificate == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        for (flag, path) in [("--tls-cert", tlsCertificate), ("--tls-key", tlsKey), ("--tls-ca", tlsAuthority)] {
            if let path, !FileManager.default.isReadableFile(atPath: path) { throw ValidationError("\(flag): cannot read \(path)") }
        }
        guard minBodyRate >= 0, minBodyRate.isFinite else { throw ValidationError("--min-body-rate wants bytes per second (0: no floor)") }
        guard (1...1_000_000).contains(maxConnections) else {
            throw ValidationError("--max-connections wants a whole number in 1...1000000, not \(maxConnections)")
        }
        guard (1...1_000_000).contains(maxConnectionsPerAddress) else {
            throw ValidationError("--max-connections-per-address wants a whole number in 1...1000000, not \(maxConnectionsPerAddress)")
        }
    }

    public static func checkSeconds(_ flag: String, _ value: Double) throws {
        guard value > 0, value.isFinite else {
            throw ValidationError("\(flag) wants a positive number of seconds, not \(value)")
        }
    }

    public static func checkPort(_ port: Int) throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port wants a whole number in 1...65535, not \(port)") }
    }

    public func configuration(port: Int) -> HTTPServer.Configuration {
        var configuration = HTTPServer.Configuration(host: bind, port: port)
        configuration.readTimeout = readTimeout
        configuration.idleTimeout = idleTimeout
        configuration.headTimeout = headTimeout
        configuration.maxConnections = maxConnections
        configuration.maxConnectionsPerAddress = maxConnectionsPerAddress
        configuration.accessLog = accessLog
        configuration.minBodyRate = minBodyRate
        configuration.tls = TLSFiles(certificate: tlsCertificate, key: tlsKey, authority: tlsAuthority)
        return configuration
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension AccessLogMode: ExpressibleByArgument {}

/// A daemon's command line. Required options are checked after parsing (argument-parser
/// would report a missing one before an unknown one, which hides the real mistake).
public protocol DaemonCommand: ParsableCommand {
    func checkRequired() throws
}

/// The life of a daemon process, shared by `master` and `volume`.
public enum Daemon {
    /// Parses the command line with swift-argument-parser. `--help`, `--version` and
    /// `--generate-completion-script` print and exit 0; any usage error is one line on
    /// standard error and exit status 2, as docs/operations.md promises.
    public static func parse<Command: DaemonCommand>(_ type: Command.Type, _ arguments: [String]) -> Command {
        do {
            let command = try Command.parse(arguments)
            try command.checkRequired()
            return command
        } catch {
            if Command.exitCode(for: error) == .success { Command.exit(withError: error) }
            let name = Command.configuration.commandName ?? "kalavara"
            FileHandle.standardError.write(Data("\(name): \(usageMessage(Command.message(for: error)))\n".utf8))
            Foundation.exit(2)
        }
    }

    /// Argument-parser's message as one line in the daemons' style ("unknown option '--x'").
    public static func usageMessage(_ message: String) -> String {
        var line = message.split(separator: "\n").first.map(String.init) ?? message
        if line.hasPrefix("Error: ") { line.removeFirst("Error: ".count) }
        if let first = line.first, first.isUppercase, !line.hasPrefix("URL") {
            line = first.lowercased() + line.dropFirst()
        }
        return line + " (see --help)"
    }

    /// Starts a daemon, waits for SIGINT/SIGTERM, stops it gracefully. Returns the exit
    /// status: 0 after a clean stop, 2 when start-up fails (index locked or unreadable,
    /// port taken, data directory unusable), which the operator must fix, as with a bad flag.
    public static func run(_ name: String, logLevel: Logger.Level, start: () throws -> () -> Void) -> Int32 {
        Log.bootstrap(component: name, level: logLevel)
        do {
            let stop = try start()
            ShutdownSignal.wait()
            Log.info("stopping")
            stop()
            Log.info("stopped")
            return 0
        } catch {
            Log.error("\(error)")
            return 2
        }
    }
}
