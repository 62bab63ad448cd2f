import Foundation
import KalavaraCore

// kalavara-load: load and measurement tools for benchmarks (see scripts/bench).
//   kalavara-load cycles -m URL [-c 16] [-t 10] [-s 1024]   PUT→GET→DELETE cycles through the master
//   kalavara-load disk -d DIR [-c 16] [-t 5]                 the disk's own create+fsync+rename rate
//   kalavara-load fill-index -d DB -n COUNT [-v URL]         bulk-load index records (master stopped)
let arguments = Array(CommandLine.arguments.dropFirst())
let commands: [String: ([String]) throws -> Void] = [
    "cycles": Cycles.run,
    "disk": DiskBaseline.run,
    "fill-index": FillIndex.run,
]
guard let name = arguments.first, let command = commands[name] else {
    FileHandle.standardError.write(Data("usage: kalavara-load cycles|disk|fill-index [options] (--help for each)\n".utf8))
    exit(2)
}
do {
    try command(Array(arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("kalavara-load \(name): \(error)\n".utf8))
    exit(2)
}
