import Foundation

/// Line-oriented logging to standard error, one line per event.
///
/// Daemons log what an operator needs to see (start, stop, registrations, removals, failures);
/// per-request logging stays off the hot path. Each line is written with a single `write(2)`
/// so lines from concurrent threads never interleave.
public enum Log {
    /// How much a line matters; lines below `threshold` are not written.
    public enum Level: Int, Comparable, Sendable {
        case debug = 0, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var label: String {
            switch self {
            case .debug: return "debug"
            case .info: return "info"
            case .warning: return "warning"
            case .error: return "error"
            }
        }
    }

    /// The lowest level written; `KALAVARA_LOG=debug` in the environment lowers it.
    nonisolated(unsafe) public static var threshold: Level =
        ProcessInfo.processInfo.environment["KALAVARA_LOG"] == "debug" ? .debug : .info
    /// The daemon's name, put at the start of every line.
    nonisolated(unsafe) public static var component = "kalavara"

    public static func debug(_ message: @autoclosure () -> String) { write(.debug, message()) }
    public static func info(_ message: @autoclosure () -> String) { write(.info, message()) }
    public static func warning(_ message: @autoclosure () -> String) { write(.warning, message()) }
    public static func error(_ message: @autoclosure () -> String) { write(.error, message()) }

    static func write(_ level: Level, _ message: @autoclosure () -> String) {
        guard level >= threshold else { return }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var tmValue = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &tmValue)
        let stamp = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                           tmValue.tm_year + 1900, tmValue.tm_mon + 1, tmValue.tm_mday,
                           tmValue.tm_hour, tmValue.tm_min, tmValue.tm_sec,
                           Int(now.tv_nsec / 1_000_000))
        let line = "\(stamp) \(component) \(level.label): \(message())\n"
        line.utf8CString.withUnsafeBufferPointer { buffer in
            _ = Foundation.write(2, buffer.baseAddress, buffer.count - 1)
        }
    }
}
