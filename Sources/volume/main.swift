import Foundation
import KalavaraCore

// Flags → Volume.run. Everything else lives in KalavaraCore.
let command = Daemon.parse(VolumeCommand.self, Array(CommandLine.arguments.dropFirst()))
exit(Volume.run(command.configuration(), logLevel: command.logLevel))
