import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// A problem the operator must see: one line on standard error, exit status 2.
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The masters the CLI talks to (any of a group's: calls reach its leader), and the
/// credentials it sends.
struct MasterConnection {
    let masters: MasterDirectory
    let authorization: String?
    let client = HTTPClient(timeout: 30, maxIdlePerHost: 2)
    /// How long a call keeps trying a group's other masters: past a failover.
    static let patience = 15.0

    init(master: String?, user: String?, tlsAuthority: String?) throws {
        let environment = ProcessInfo.processInfo.environment
        if let authority = tlsAuthority ?? environment["KALAVARA_TLS_CA"] {
            do { try TLSTrust.use(authority: authority) } catch { throw Failure("--tls-ca: \(error)") }
        }
        let list = master ?? environment["KALAVARA_MASTER"] ?? "http://127.0.0.1:6000"
        var urls: [String] = []
        for url in list.split(separator: ",").map(String.init) {
            guard let normalized = VolumeRegistry.normalize(url) else { throw Failure("not a master URL (want http://host:port or https://host:port): \(url)") }
            urls.append(normalized)
        }
        guard !urls.isEmpty else { throw Failure("no master URL given") }
        masters = MasterDirectory(urls)
        if let user = user ?? environment["KALAVARA_USER"] {
            guard user.contains(":") else { throw Failure("--user wants NAME:SECRET") }
            authorization = "Basic " + Data(user.utf8).base64EncodedString()
        } else {
            authorization = nil
        }
    }

    var headers: HTTPHeaders {
        var headers = HTTPHeaders()
        if let authorization { headers.add("Authorization", authorization) }
        return headers
    }

    /// A request to the master (a group's leader); a 4xx/5xx answer is a Failure with the master's reason.
    @discardableResult
    func send(_ method: String, _ path: String, body: [UInt8] = [], expect: Set<Int> = [200]) throws -> ClientResponse {
        let answer: ClientResponse
        do {
            answer = try masters.send(client, method, path, headers: headers, body: body, patience: masters.isGroup ? Self.patience : 0)
        } catch {
            throw Failure("cannot reach the master at \(masters.known.joined(separator: ",")): \(error)")
        }
        guard expect.contains(answer.status) else { throw Self.refusal(method, path, answer.status, answer.text) }
        return answer
    }

    /// A request to any daemon (a volume the master sent us to, with its ticket, carries no
    /// credentials); an unexpected answer is a Failure with the daemon's reason.
    @discardableResult
    func call(_ method: String, _ url: HTTPURL, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [], expect: Set<Int>,
              peer: String? = nil) throws -> ClientResponse {
        let answer: ClientResponse
        do {
            answer = try client.send(method, url, headers: headers, body: body)
        } catch {
            throw Failure("cannot reach \(peer ?? url.authority): \(error)")
        }
        guard expect.contains(answer.status) else { throw Self.refusal(method, url.pathAndQuery, answer.status, answer.text) }
        return answer
    }

    func json<Value: Decodable>(_ type: Value.Type, _ path: String) throws -> Value {
        try Self.decode(type, try send("GET", path), what: "GET \(path)")
    }

    static func decode<Value: Decodable>(_ type: Value.Type, _ answer: ClientResponse, what: String) throws -> Value {
        do {
            return try JSONDecoder().decode(type, from: Data(answer.body))
        } catch {
            throw Failure("\(what): the answer is not what this kalavara understands (\(error))")
        }
    }

    /// Where the master sends a request for a key: the volume URL with its ticket.
    func redirect(_ method: String, key: Key) throws -> HTTPURL {
        let path = "/store/" + key.pathComponent
        let answer = try send(method, path, expect: [302, 307])
        guard let location = answer.headers["Location"], let url = HTTPURL(location) else {
            throw Failure("\(method) \(key): the master's redirect has no usable Location")
        }
        return url
    }

    /// `GET /store/k: 404 no such key` (the query, a ticket, left out).
    static func refusal(_ method: String, _ target: String, _ status: Int, _ text: String) -> Failure {
        let reason = text.split(separator: "\n").first.map(String.init) ?? ""
        let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? target
        return Failure("\(method) \(path.removingPercentEncoding ?? path): \(status) \(reason)")
    }
}

/// A progress bar on standard error, drawn only when it is a terminal; silent when piped.
final class ProgressBar {
    private let label: String
    private var total: Int?
    private let unit: Unit
    private let enabled: Bool
    private var lastDraw = 0.0
    private let started = monotonicSeconds()
    private var current = 0

    enum Unit { case bytes, items }

    init(_ label: String, total: Int?, unit: Unit = .bytes, enabled: Bool = isatty(2) == 1) {
        self.label = label
        self.total = total
        self.unit = unit
        self.enabled = enabled
    }

    func update(_ value: Int, total newTotal: Int? = nil) {
        current = value
        if let newTotal { total = newTotal }
        guard enabled else { return }
        let now = monotonicSeconds()
        guard now - lastDraw >= 0.1 else { return }
        lastDraw = now
        draw()
    }

    func advance(_ delta: Int) { update(current + delta) }

    func finish(_ message: String? = nil) {
        guard enabled else { return }
        draw()
        FileHandle.standardError.write(Data("\n".utf8))
        if let message { FileHandle.standardError.write(Data((message + "\n").utf8)) }
    }

    private func draw() {
        let width = 30
        let elapsed = max(0.001, monotonicSeconds() - started)
        var line = "\r\(label) "
        if let total, total > 0 {
            let fraction = min(1, Double(current) / Double(total))
            let filled = Int((fraction * Double(width)).rounded(.down))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] "
            line += String(format: "%3.0f%% ", fraction * 100)
            line += "\(format(current))/\(format(total))"
        } else {
            line += format(current)
        }
        if unit == .bytes { line += " " + StatusPage.formatBytes(Int(Double(current) / elapsed)) + "/s" }
        FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
    }

    private func format(_ value: Int) -> String {
        unit == .bytes ? StatusPage.formatBytes(value) : StatusPage.formatCount(value)
    }
}

/// Polls until `done` says so, every half second, for at most `timeout` seconds.
func poll(timeout: Double, _ done: () throws -> Bool) throws {
    let deadline = monotonicSeconds() + timeout
    while true {
        if try done() { return }
        guard monotonicSeconds() < deadline else { throw Failure("gave up waiting after \(Int(timeout)) s (--timeout)") }
        usleep(500_000)
    }
}
