import Foundation
import KalavaraSupport
import Logging
import Synchronization

/// Which answers get a line in the daemon's log (`--access-log`).
public enum AccessLogMode: String, Sendable, CaseIterable {
    /// No access lines; a refusal's reason is still logged (see `AccessLog`).
    case off
    /// A line for every 4xx and 5xx answer: what was refused or failed, and why.
    case errors
    /// A line for every answer.
    case all
}

/// One line per answered request, written by the server for every daemon alike:
///
///     … master info: access PUT /a%0Ab 403 ms=0.21 peer=127.0.0.1 reason="bob lacks the 'write' right" rid=- sent=142 user=bob
///
/// Why in the server: a refused request never reaches a handler that could log it (the
/// router refuses it, or no route matches), and the gateway used to log nothing at all
/// about its refusals. The path is logged as sent (still percent-encoded); the log handler
/// escapes any control character in it or in a user name, so no client text forges a line.
///
/// Independently of the mode, every 4xx/5xx answer's reason is logged at `info`: with
/// `--access-log off` as a short line of its own, otherwise inside the access line.
///
/// What an outsider controls is bounded, since these lines are written on the event loop:
/// client text (path, user, reason) is cut to `maxClientText` bytes, and lines about 4xx/5xx
/// answers share a budget of `failureLinesPerSecond` per daemon. Past it a line is not even
/// gathered (`logs(status:)` is two atomic operations), and a line once a second or so says
/// how many were dropped, so a flood of 404s costs neither the loop's time nor the disk.
final class AccessLog: Sendable {
    let mode: AccessLogMode
    /// Lines about 4xx/5xx answers per second at most, all threads together.
    let failureLinesPerSecond: Int
    /// Bytes of client text (a path, a user name, a reason) a line keeps; the rest is cut
    /// with a marker saying how long it was.
    static let maxClientText = 256

    /// The whole second of `monotonicSeconds` the budget is counting, lines written in it,
    /// and lines dropped since the last summary.
    private let window = Atomic<Int>(0)
    private let linesInWindow = Atomic<Int>(0)
    private let suppressed = Atomic<Int>(0)

    init(mode: AccessLogMode, failureLinesPerSecond: Int = 300) {
        self.mode = mode
        self.failureLinesPerSecond = failureLinesPerSecond
    }

    /// What one answer was; `method` and `path` are `-` for a connection refused before it
    /// sent a request.
    struct Entry {
        var method: String
        var path: Substring
        var status: Int
        var explanation: String?
        var sent: Int
        var elapsed: Duration
        var requestID: String?
        var user: String?
        var peer: String
    }

    /// Whether an answer with `status` gets a line: the caller skips gathering the entry
    /// otherwise (this runs for every request). A 4xx/5xx answer takes one line of the
    /// budget, or counts as suppressed when it is spent.
    func logs(status: Int) -> Bool {
        guard status >= 400 else { return mode == .all }
        rollWindow(now: monotonicSeconds())
        if linesInWindow.wrappingAdd(1, ordering: .relaxed).oldValue < failureLinesPerSecond { return true }
        suppressed.wrappingAdd(1, ordering: .relaxed)
        return false
    }

    /// Starts a new second of budget when the clock has moved on, logging what the last
    /// ones dropped; also called a few times a second by the event loops, so the summary
    /// comes when a flood stops too.
    func rollWindow(now: Double) {
        let second = Int(now), current = window.load(ordering: .relaxed)
        guard second != current,
              window.compareExchange(expected: current, desired: second, ordering: .relaxed).exchanged else { return }
        linesInWindow.store(0, ordering: .relaxed)
        let dropped = suppressed.exchange(0, ordering: .relaxed)
        if dropped > 0 {
            Log.warning("\(dropped) access-log line(s) suppressed: over \(failureLinesPerSecond) lines/s about 4xx/5xx answers")
        }
    }

    /// Writes the line; the caller has asked `logs(status:)`.
    func record(_ entry: Entry) {
        let failed = entry.status >= 400
        let path = Self.clipped(entry.path)
        switch mode {
        case .off:
            guard failed else { return }
            Log.info("refused \(entry.method) \(path) \(entry.status)", ["peer": "\(entry.peer)", "reason": reason(entry)])
        case .errors, .all:
            guard failed || mode == .all else { return }
            var metadata: Logger.Metadata = [
                "sent": "\(entry.sent)",
                "ms": "\(Self.milliseconds(entry.elapsed))",
                "rid": "\(entry.requestID ?? "-")",
                "user": user(entry),
                "peer": "\(entry.peer)",
            ]
            if failed { metadata["reason"] = reason(entry) }
            Log.info("access \(entry.method) \(path) \(entry.status)", metadata)
        }
    }

    /// Quoted, so a reason's spaces cannot pass for further `name=value` fields (the log
    /// handler escapes a quote inside a quoted value).
    private func reason(_ entry: Entry) -> Logger.MetadataValue {
        "\"\(Self.clipped(entry.explanation ?? HTTPResponse.reason(entry.status)))\""
    }

    /// A user name is client text too: quoted when it has a space or a quote in it.
    private func user(_ entry: Entry) -> Logger.MetadataValue {
        guard let user = entry.user else { return "-" }
        let clipped = Self.clipped(user)
        return clipped.utf8.contains(where: { $0 == ASCII.space || $0 == UInt8(ascii: "\"") }) ? "\"\(clipped)\"" : "\(clipped)"
    }

    /// `text` cut to `maxClientText` bytes, with a marker saying how long it was.
    static func clipped(_ text: some StringProtocol) -> String {
        let count = text.utf8.count
        guard count > maxClientText else { return String(text) }
        return String(decoding: text.utf8.prefix(maxClientText), as: UTF8.self) + "…(\(count) bytes)"
    }

    private static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let total = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        return String(format: "%.2f", total)
    }

    /// The id a request is known by: the one the daemon answered with (the master's
    /// `X-Request-Id`, the gateway's `x-amz-request-id`), else the client's own.
    static func requestID(_ request: HTTPRequest?, _ response: HTTPResponse) -> String? {
        response.headers["X-Request-Id"] ?? response.headers["x-amz-request-id"] ?? request?.headers["X-Request-Id"]
    }
}
