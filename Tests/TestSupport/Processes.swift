import Foundation

/// Starts `executable` with `arguments`, its standard output and error appended to the file
/// at `logPath` (created if need be), for a test to show when the process misbehaves.
public func launchLogged(_ executable: String, _ arguments: [String], logPath: String) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if !FileManager.default.fileExists(atPath: logPath) {
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
    handle.seekToEndOfFile()
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    return process
}

/// The path of `name` in a directory of `$PATH`, if it is there and executable.
public func executableInPath(_ name: String) -> String? {
    let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
    return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}
