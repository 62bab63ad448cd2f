import Foundation
import KalavaraCore
import KalavaraS3

// Flags → S3Gateway.run. Everything else lives in KalavaraS3.
let command = Daemon.parse(S3Command.self, Array(CommandLine.arguments.dropFirst()))
exit(S3Gateway.run(command.configuration(), logLevel: command.logLevel))
