import ArgumentParser
import Foundation
import KalavaraCore
import KalavaraHTTP

/// kalavara-load: load and measurement tools for benchmarks (see scripts/bench).
struct KalavaraLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kalavara-load",
        abstract: "Load and measurement tools for Kalavara's benchmarks.",
        version: Kalavara.version,
        subcommands: [CyclesCommand.self, DiskCommand.self, FillIndexCommand.self, HashCommand.self])
}

/// Options shared by the load generators.
struct LoadOptions: ParsableArguments {
    @Option(name: .customShort("c"), help: "Concurrent clients (threads).") var clients = 16
    @Option(name: .customShort("t"), help: "Seconds to run (cycles: 10, disk: 5).") var seconds: Double?
    @Option(name: .customShort("s"), help: "Value size in bytes.") var size = 1024


}

struct CyclesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cycles", abstract: "PUT→GET→DELETE cycles through the master (or only PUTs with -o put).")
    @Option(name: .customShort("m"), help: "Master base URL.") var master: String
    @Option(name: .customShort("p"), help: "Key prefix.") var prefix: String?
    @Option(name: .customShort("o"), help: "Operation: cycle (default) or put.") var operation = "cycle"
    @Option(name: .customShort("n"), help: "With -o put: at most this many keys.") var count: Int?
    @OptionGroup var load: LoadOptions

    func validate() throws {
        guard HTTPURL(master) != nil else { throw ValidationError("-m wants http://host:port, not \(master)") }
        guard ["cycle", "put"].contains(operation) else { throw ValidationError("-o is cycle or put, not \(operation)") }
    }

    func run() throws {
        let url = HTTPURL(master)!, seconds = load.seconds ?? 10
        if operation == "put" {
            try Cycles.putOnly(master: url, clients: load.clients, seconds: seconds, size: load.size,
                               limit: count ?? Int.max, prefix: prefix ?? "put-\(getpid())-")
        } else {
            try Cycles.run(master: url, clients: load.clients, seconds: seconds, size: load.size,
                           prefix: prefix ?? "load-\(getpid())")
        }
    }
}

struct DiskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk", abstract: "The disk's own durable create + fsync + rename + directory fsync rate.")
    @Option(name: .customShort("d"), help: "Scratch directory (removed afterwards).") var directory: String?
    @OptionGroup var load: LoadOptions

    func run() throws {
        try DiskBaseline.run(root: directory ?? NSTemporaryDirectory() + "kalavara-disk-\(getpid())",
                             threads: load.clients, seconds: load.seconds ?? 5, size: load.size)
    }
}

struct FillIndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fill-index", abstract: "Bulk-load index records into a stopped master's index.")
    @Option(name: .customShort("d"), help: "The master's index directory.") var database: String
    @Option(name: .customShort("n"), help: "Keys to load.") var count: Int
    @Option(name: .customShort("v"), help: "The volume said to hold them.") var volume = "http://127.0.0.1:7000"

    func run() throws {
        try FillIndex.run(path: database, count: count, volume: volume)
    }
}

// As before argument-parser: a usage error or a failed run is one line and exit status 2.
do {
    var command = try KalavaraLoad.parseAsRoot()
    try command.run()
} catch {
    if KalavaraLoad.exitCode(for: error) == .success { KalavaraLoad.exit(withError: error) }
    FileHandle.standardError.write(Data("kalavara-load: \(KalavaraLoad.message(for: error))\n".utf8))
    exit(2)
}
