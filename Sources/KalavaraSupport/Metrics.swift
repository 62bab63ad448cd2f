import enum CoreMetrics.MetricsSystem
import Prometheus
import Synchronization

/// A daemon's metrics, served at `/metrics` in Prometheus' text format (swift-prometheus).
///
/// Counters and histograms are made once, where the thing they measure is set up, and
/// updated in place: an increment is an atomic add, a histogram observation one short lock.
/// Values that are cheaper to read than to track (free disk, index size) are set by hooks
/// that run when the page is scraped. `bootstrapSwiftMetrics` also routes the swift-metrics
/// API to the same registry, so any library's metrics appear on the same page.
public final class Metrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let scrapeHooks = Mutex<[@Sendable () -> Void]>([])

    public init() {}

    /// Latency buckets from 50 µs to 10 s: a redirect is tens of µs, a synced write a few ms,
    /// a large upload seconds.
    public static let latencyBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
    ]

    public func counter(_ name: String, _ help: String, labels: [(String, String)] = []) -> Counter {
        registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
    }

    public func gauge(_ name: String, _ help: String, labels: [(String, String)] = []) -> Gauge {
        registry.makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
    }

    public func histogram(_ name: String, _ help: String, labels: [(String, String)] = [],
                          buckets: [Duration] = Metrics.latencyBuckets) -> DurationHistogram {
        registry.makeDurationHistogram(descriptor: Self.descriptor(name, help), labels: labels, buckets: buckets)
    }

    /// A gauge whose value is read when the page is scraped.
    public func gauge(_ name: String, _ help: String, labels: [(String, String)] = [],
                      read: @escaping @Sendable () -> Double) {
        let gauge = gauge(name, help, labels: labels)
        scrapeHooks.withLock { $0.append { gauge.set(read()) } }
    }

    /// Routes swift-metrics' global API to this registry. Once per process (a daemon's `run`).
    public func bootstrapSwiftMetrics() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    /// The exposition text.
    public func render() -> [UInt8] {
        for hook in scrapeHooks.withLock({ $0 }) { hook() }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        registry.emit(into: &buffer)
        return buffer
    }

    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}

extension DurationHistogram {
    /// Records the time `body` takes (also when it throws).
    @inlinable
    public func time<T>(_ body: () throws -> T) rethrows -> T {
        let start = ContinuousClock.now
        defer { record(ContinuousClock.now - start) }
        return try body()
    }
}
