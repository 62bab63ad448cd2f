import Foundation
import Logging

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
struct AccessLog: Sendable {
    let mode: AccessLogMode

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
    /// otherwise (this runs for every request).
    func logs(status: Int) -> Bool { status >= 400 || mode == .all }

    func record(_ entry: Entry) {
        let failed = entry.status >= 400
        switch mode {
        case .off:
            guard failed else { return }
            Log.info("refused \(entry.method) \(entry.path) \(entry.status)", ["peer": "\(entry.peer)", "reason": reason(entry)])
        case .errors, .all:
            guard failed || mode == .all else { return }
            var metadata: Logger.Metadata = [
                "sent": "\(entry.sent)",
                "ms": "\(Self.milliseconds(entry.elapsed))",
                "rid": "\(entry.requestID ?? "-")",
                "user": "\(entry.user ?? "-")",
                "peer": "\(entry.peer)",
            ]
            if failed { metadata["reason"] = reason(entry) }
            Log.info("access \(entry.method) \(entry.path) \(entry.status)", metadata)
        }
    }

    /// Quoted, so a reason's spaces cannot pass for further `name=value` fields.
    private func reason(_ entry: Entry) -> Logger.MetadataValue {
        "\"\(entry.explanation ?? HTTPResponse.reason(entry.status))\""
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
