import Foundation
import KalavaraCore

// Flags → S3Gateway.run. Everything else lives in KalavaraCore.
let command = Daemon.parse(S3Command.self, Array(CommandLine.arguments.dropFirst()))
exit(S3Gateway.run(command.configuration(), logLevel: command.logLevel))
