import ArgumentParser
import KalavaraCore
import Logging

/// `kalavara-s3`'s command line.
public struct S3Command: DaemonCommand {
    public static let configuration = CommandConfiguration(
        commandName: "kalavara-s3",
        abstract: "Kalavara S3 gateway: the S3 REST API (path-style, Signature V4) over a Kalavara cluster.",
        discussion: "Usage: kalavara-s3 -p PORT -m MASTER [--auth-file F] [--secret-file F] [options]",
        version: Kalavara.version)

    @Option(name: [.customShort("p"), .customLong("port")], help: ArgumentHelp("Port to listen on.", valueName: "port"))
    var port = 9000

    @Option(name: [.customShort("m"), .customLong("master")], help: ArgumentHelp("Master base URL, e.g. http://127.0.0.1:6000 (a group's: several, comma-separated). Required.", valueName: "url"))
    var master: String?

    @Option(name: .customLong("auth-file"),
            help: ArgumentHelp("S3 credentials, one per line: ACCESS_KEY SECRET_KEY RIGHTS (read,write,admin). Without it any credentials are accepted.",
                               valueName: "path"))
    var authFile: String?

    @Option(name: .customLong("upload-grace"),
            help: ArgumentHelp("Remove multipart uploads neither completed nor aborted after this long.", valueName: "seconds"))
    var uploadGrace = 86400.0

    @Option(name: .customLong("sweep-every"), help: ArgumentHelp("How often to look for abandoned uploads.", valueName: "seconds"))
    var sweepEvery = 600.0

    @Option(name: .customLong("min-part-size"), help: ArgumentHelp("Smallest part but the last of a multipart upload (S3: 5 MiB).", valueName: "bytes"))
    var minPartSize = 5 * 1024 * 1024

    @OptionGroup var server: ServerOptions

    public init() {}

    public mutating func validate() throws {
        try ServerOptions.checkPort(port)
        try ServerOptions.checkSeconds("--upload-grace", uploadGrace)
        try ServerOptions.checkSeconds("--sweep-every", sweepEvery)
        guard minPartSize >= 1 else { throw ValidationError("--min-part-size wants a positive number of bytes") }
        for url in master?.split(separator: ",") ?? [] where VolumeRegistry.normalize(String(url)) == nil {
            throw ValidationError("--master wants http://host:port[,http://host:port...], not \(url)")
        }
    }

    public func checkRequired() throws {
        guard master != nil else { throw ValidationError("missing required option -m/--master") }
    }

    public var logLevel: Logger.Level { server.logLevel }

    public func configuration() -> S3Configuration {
        var configuration = S3Configuration()
        configuration.server = server.configuration(port: port)
        configuration.masterURLs = (master?.split(separator: ",") ?? []).compactMap { VolumeRegistry.normalize(String($0)) }
        configuration.authFile = authFile
        configuration.secretFile = server.secretFile
        configuration.uploadGrace = uploadGrace
        configuration.sweepEvery = sweepEvery
        configuration.minPartSize = minPartSize
        return configuration
    }
}
