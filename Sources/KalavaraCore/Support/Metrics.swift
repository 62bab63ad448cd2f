import Foundation

/// Counters exposed at `/metrics` in Prometheus' text format.
///
/// A handful of named counters behind one lock: a request costs one uncontended lock, and
/// the text is built only when scraped.
public final class Metrics {
    private let lock = NSLock()
    private var counters: [String: Int] = [:]
    private var help: [String: String] = [:]
    private var gauges: [String: () -> Double] = [:]

    public init() {}

    /// Adds `amount` to the counter `name{labels}`.
    public func count(_ name: String, _ labels: String = "", by amount: Int = 1) {
        let series = labels.isEmpty ? name : "\(name){\(labels)}"
        lock.lock()
        counters[series, default: 0] += amount
        lock.unlock()
    }

    /// A value read at scrape time.
    public func gauge(_ name: String, _ text: String, _ read: @escaping () -> Double) {
        lock.lock()
        help[name] = text
        gauges[name] = read
        lock.unlock()
    }

    private static let methods = ["GET", "HEAD", "PUT", "DELETE", "POST"]
    private var requests: [Int: Int] = [:]

    /// Counts a served request by method and status. On every request, so it builds no
    /// strings: the labels are made at scrape time.
    public func countRequest(method: String, status: Int) {
        let methodIndex = Self.methods.firstIndex(of: method) ?? Self.methods.count
        lock.lock()
        requests[methodIndex * 1000 + status, default: 0] += 1
        lock.unlock()
    }

    public func render() -> String {
        lock.lock()
        var counterSnapshot = counters
        let helpSnapshot = help, gaugeSnapshot = gauges
        for (code, value) in requests {
            let method = code / 1000 < Self.methods.count ? Self.methods[code / 1000] : "other"
            counterSnapshot["kalavara_http_requests_total{method=\"\(method)\",status=\"\(code % 1000)\"}"] = value
        }
        lock.unlock()
        var out = ""
        var described: Set<String> = []
        for series in counterSnapshot.keys.sorted() {
            let name = String(series.prefix(while: { $0 != "{" }))
            if described.insert(name).inserted {
                if let text = helpSnapshot[name] { out += "# HELP \(name) \(text)\n" }
                out += "# TYPE \(name) counter\n"
            }
            out += "\(series) \(counterSnapshot[series]!)\n"
        }
        for name in gaugeSnapshot.keys.sorted() {
            if let text = helpSnapshot[name] { out += "# HELP \(name) \(text)\n" }
            out += "# TYPE \(name) gauge\n\(name) \(gaugeSnapshot[name]!())\n"
        }
        return out
    }
}
