/// The listening flags both daemons share, and their parsing into a server configuration.
extension HTTPServer.Configuration {
    static func commandLineOptions(defaultPort: Int) -> [CommandLineOptions.Option] {
        [
            .init(["-p", "--port"], value: "PORT", default: String(defaultPort), help: "Port to listen on."),
            .init(["--bind"], value: "HOST", default: "0.0.0.0", help: "Address to listen on."),
            .init(["--read-timeout"], value: "SECONDS", default: "30", help: "Drop a client whose request stalls this long."),
            .init(["--idle-timeout"], value: "SECONDS", default: "30", help: "Close keep-alive connections idle this long."),
            .init(["--max-connections"], value: "N", default: "1024", help: "Open client connections at most; more get 503."),
        ]
    }

    init(parsed options: CommandLineOptions) throws {
        self.init(host: options.string("--bind")!, port: try options.integer("--port", in: 1...65535)!)
        readTimeout = try options.seconds("--read-timeout")!
        idleTimeout = try options.seconds("--idle-timeout")!
        maxConnections = try options.integer("--max-connections", in: 1...1_000_000)!
    }
}

/// The life of a daemon process, shared by `master` and `volume`.
public enum Daemon {
    /// Starts a daemon, waits for SIGINT/SIGTERM, stops it gracefully. Returns the exit
    /// status: 0 after a clean stop, 2 when start-up fails (index locked or unreadable,
    /// port taken, data directory unusable), which the operator must fix, as with a bad flag.
    public static func run(_ name: String, start: () throws -> () -> Void) -> Int32 {
        Log.component = name
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
