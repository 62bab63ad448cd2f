import Foundation
import KalavaraCore

// Flags → Master.run. Everything else lives in KalavaraCore.
let command = Daemon.parse(MasterCommand.self, Array(CommandLine.arguments.dropFirst()))
exit(Master.run(command.configuration(), logLevel: command.logLevel))
