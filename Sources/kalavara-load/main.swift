import ArgumentParser
import Foundation
import KalavaraCore

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

    func flags() -> [String: String] {
        var flags = ["-c": String(clients), "-s": String(size)]
        if let seconds { flags["-t"] = String(seconds) }
        return flags
    }
}

struct CyclesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cycles", abstract: "PUT→GET→DELETE cycles through the master (or only PUTs with -o put).")
    @Option(name: .customShort("m"), help: "Master base URL.") var master: String
    @Option(name: .customShort("p"), help: "Key prefix.") var prefix: String?
    @Option(name: .customShort("o"), help: "Operation: cycle (default) or put.") var operation = "cycle"
    @Option(name: .customShort("n"), help: "With -o put: at most this many keys.") var count: Int?
    @OptionGroup var load: LoadOptions

    func run() throws {
        var flags = load.flags()
        flags["-m"] = master
        if operation == "put" { flags["-o"] = "put" }
        if let prefix { flags["-p"] = prefix }
        if let count { flags["-n"] = String(count) }
        try Cycles.run(flags)
    }
}

struct DiskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk", abstract: "The disk's own durable create + fsync + rename + directory fsync rate.")
    @Option(name: .customShort("d"), help: "Scratch directory (removed afterwards).") var directory: String?
    @OptionGroup var load: LoadOptions

    func run() throws {
        var flags = load.flags()
        if let directory { flags["-d"] = directory }
        try DiskBaseline.run(flags)
    }
}

struct FillIndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fill-index", abstract: "Bulk-load index records into a stopped master's index.")
    @Option(name: .customShort("d"), help: "The master's index directory.") var database: String
    @Option(name: .customShort("n"), help: "Keys to load.") var count: Int
    @Option(name: .customShort("v"), help: "The volume said to hold them.") var volume = "http://127.0.0.1:7000"

    func run() throws {
        try FillIndex.run(["-d": database, "-n": String(count), "-v": volume])
    }
}

KalavaraLoad.main()
