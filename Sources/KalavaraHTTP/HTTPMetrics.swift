import KalavaraSupport
import Prometheus
import Synchronization

/// What the HTTP server measures about itself: requests by route and status, their
/// latency, bytes in and out, open connections, and how long the event loop is busy
/// between two waits (the longest a ready connection can wait to be noticed: its lag).
final class HTTPMetrics: Sendable {
    private let metrics: Metrics
    private let routeNames: [String]
    private let durations: [DurationHistogram]
    /// One counter per (route, status) seen, made on first use.
    private let requests = Mutex<[Int: Counter]>([:])
    let received: Counter
    let sent: Counter
    let openConnections: Gauge
    let loopBusy: DurationHistogram
    /// Requests answered since start-up, for the volume's health answer (the master turns
    /// successive answers into a request rate for the status page).
    let answered = Atomic(0)

    init(metrics: Metrics, router: Router) {
        self.metrics = metrics
        routeNames = router.metricNames
        durations = routeNames.map {
            metrics.histogram("kalavara_http_request_duration_seconds",
                              "Time from a request's head to its answer being written, by route", labels: [("route", $0)])
        }
        received = metrics.counter("kalavara_http_received_bytes_total", "Request bytes received, heads and bodies")
        sent = metrics.counter("kalavara_http_sent_bytes_total", "Response bytes sent, heads and bodies")
        openConnections = metrics.gauge("kalavara_http_open_connections", "Client connections open now")
        loopBusy = metrics.histogram("kalavara_event_loop_lag_seconds",
                                     "Time an event loop spent between two waits: how late a ready connection can be noticed",
                                     buckets: [.microseconds(10), .microseconds(50), .microseconds(100), .microseconds(500),
                                               .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50),
                                               .milliseconds(100), .milliseconds(500), .seconds(1)])
    }

    /// The index used for requests that matched no route.
    var unmatchedIndex: Int { routeNames.count - 1 }

    /// Records one answered request. `route` is an index from the router, or nil.
    func record(route: Int?, status: Int, started: ContinuousClock.Instant, received bytesIn: Int, sent bytesOut: Int) {
        let index = route ?? unmatchedIndex
        answered.add(1, ordering: .relaxed)
        durations[index].record(ContinuousClock.now - started)
        let key = index << 10 | (status & 0x3FF)
        let counter = requests.withLock { counters -> Counter in
            if let existing = counters[key] { return existing }
            let made = metrics.counter("kalavara_http_requests_total", "Requests answered, by route and status",
                                       labels: [("route", routeNames[index]), ("status", String(status))])
            counters[key] = made
            return made
        }
        counter.increment()
        received.increment(by: Int64(bytesIn))
        sent.increment(by: Int64(bytesOut))
    }
}

extension HTTPResponse {
    /// `GET /metrics`: the exposition page of `metrics`.
    public static func metrics(_ metrics: Metrics) -> HTTPResponse {
        var response = HTTPResponse(status: 200, body: .bytes(metrics.render()))
        response.headers.set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        return response
    }
}
