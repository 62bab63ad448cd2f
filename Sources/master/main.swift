import Foundation
import KalavaraCore

// Flags → Master.run. Everything else lives in KalavaraCore.
do {
    guard let configuration = try MasterConfiguration.parse(Array(CommandLine.arguments.dropFirst())) else { exit(0) }
    exit(Master.run(configuration))
} catch {
    FileHandle.standardError.write(Data("master: \(error)\n".utf8))
    exit(2)
}
