import Foundation
import KalavaraCore

// Flags → Volume.run. Everything else lives in KalavaraCore.
do {
    guard let configuration = try VolumeConfiguration.parse(Array(CommandLine.arguments.dropFirst())) else { exit(0) }
    exit(Volume.run(configuration))
} catch {
    FileHandle.standardError.write(Data("volume: \(error)\n".utf8))
    exit(2)
}
