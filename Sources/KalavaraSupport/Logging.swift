import Foundation
import Logging
import Synchronization

/// The daemons' log lines, through swift-log: `Log.info("...", ["key": "\(key)"])` or any
/// `Logger` of a library. `Log.bootstrap` installs `CompactLogHandler` once per process.
///
/// Daemons log what an operator needs to see (start, stop, registrations, removals,
/// failures); per-request lines are `debug`, off the hot path unless asked for.
public enum Log {
    /// The process's logger; its label is the daemon's name.
    static var logger: Logger { current.withLock { $0 } }
    private static let current = Mutex(Logger(label: "kalavara"))

    /// Installs the compact handler for the process, at `level`. Call once, first thing.
    public static func bootstrap(component: String, level: Logger.Level) {
        LoggingSystem.bootstrap { label in CompactLogHandler(label: label, level: level) }
        current.withLock { $0 = Logger(label: component) }
    }

    public static func debug(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> Logger.Metadata? = nil) {
        logger.debug("\(message())", metadata: metadata())
    }
    public static func info(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> Logger.Metadata? = nil) {
        logger.info("\(message())", metadata: metadata())
    }
    public static func warning(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> Logger.Metadata? = nil) {
        logger.warning("\(message())", metadata: metadata())
    }
    public static func error(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> Logger.Metadata? = nil) {
        logger.error("\(message())", metadata: metadata())
    }
}

/// One line per event on standard error, as Kalavara has always written them:
///
///     2026-12-01T21:49:04.123Z master info: volume http://127.0.0.1:7000 added
///     2026-12-01T21:49:05.456Z volume warning: commit failed key=a/b ver=1234 rid=9f2c…
///
/// Metadata follows the message as sorted `name=value` pairs. Each line is one `write(2)`,
/// so lines of concurrent threads never interleave.
struct CompactLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, level: Logger.Level) {
        self.label = label
        logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        let now = Date()
        let message = "\(event.message)"
        if event.level >= .warning { RecentEvents.record(time: now, level: event.level, message: message) }
        let line = Self.format(time: now, label: label, level: event.level, message: message, metadata: all)
        line.utf8CString.withUnsafeBufferPointer { buffer in
            _ = Foundation.write(2, buffer.baseAddress, buffer.count - 1)
        }
    }

    /// The text of one line, newline included.
    static func format(time: Date, label: String, level: Logger.Level, message: String,
                              metadata: Logger.Metadata) -> String {
        let totalMilliseconds = Int((time.timeIntervalSince1970 * 1000).rounded())
        var seconds = totalMilliseconds / 1000
        let milliseconds = totalMilliseconds % 1000
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var line = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ", parts.tm_year + 1900, parts.tm_mon + 1,
                          parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, milliseconds)
        line += "\(label) \(level.rawValue): \(escaped(message))"
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) { line += " \(name)=\(escapedValue("\(value)"))" }
        return line + "\n"
    }

    /// `text` with every control character written out (`\n`, `\r`, `\t`, `\xNN`, `\u{NNNN}`
    /// for C1 controls and the Unicode line separators) and `\` doubled. Messages and metadata
    /// carry client text (keys, paths, user names): a key with a line break must not forge a
    /// log line, nor an escape sequence repaint an operator's terminal. Escaping here, where
    /// every line is written, means no caller can forget it.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var result = ""
        result.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            guard needsEscape(scalar) else {
                result.unicodeScalars.append(scalar)
                continue
            }
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\\": result += "\\\\"
            default:
                result += scalar.value < 0x80 ? "\\x" + hexByte(scalar.value) : "\\u{" + String(scalar.value, radix: 16) + "}"
            }
        }
        return result
    }

    /// A metadata value as written: `escaped`, and if it is quoted (`"..."`, as the access
    /// log's reasons are) a `"` inside it is written `\"`, so client text in it cannot close
    /// the quote and forge further `name=value` fields.
    static func escapedValue(_ text: String) -> String {
        let utf8 = text.utf8
        guard utf8.count >= 2, utf8.first == quote, utf8.last == quote else { return escaped(text) }
        let inside = escaped(String(text.dropFirst().dropLast()))
        guard inside.utf8.contains(quote) else { return "\"" + inside + "\"" }
        var result = "\""
        for scalar in inside.unicodeScalars {
            if scalar == "\"" { result += "\\\"" } else { result.unicodeScalars.append(scalar) }
        }
        return result + "\""
    }

    private static let quote = UInt8(ascii: "\"")

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || scalar == "\\" || (0x7F...0x9F).contains(scalar.value)
            || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    private static func hexByte(_ value: UInt32) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(value >> 4) & 0xF], digits[Int(value) & 0xF]])
    }
}

/// The last warnings and errors this process logged, for the status page: an operator
/// sees at a glance what went wrong lately without reading the logs.
public enum RecentEvents {
    public struct Event: Sendable, Encodable {
        public let time: Double
        public let level: String
        public let message: String
    }

    static let capacity = 20
    private static let events = Mutex<[Event]>([])

    static func record(time: Date, level: Logger.Level, message: String) {
        let event = Event(time: time.timeIntervalSince1970, level: level.rawValue, message: String(message.prefix(500)))
        events.withLock { events in
            events.append(event)
            if events.count > capacity { events.removeFirst(events.count - capacity) }
        }
    }

    /// Newest first.
    public static var snapshot: [Event] { events.withLock { $0.reversed() } }
}
