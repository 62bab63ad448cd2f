import Foundation
import KalavaraCore

/// Latency samples of one operation, in microseconds; percentiles by sorting at the end.
/// Runs are bounded in time, so keeping every sample is cheap and exact.
struct Latencies {
    private(set) var samples: [Double] = []

    mutating func add(_ microseconds: Double) { samples.append(microseconds) }
    mutating func merge(_ other: Latencies) { samples += other.samples }

    func percentile(_ p: Double) -> Double {
        guard !samples.isEmpty else { return 0 }
        let sorted = samples.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p / 100))]
    }

    /// "p50 0.41 ms  p99 1.92 ms"
    var summary: String {
        String(format: "p50 %.2f ms  p99 %.2f ms", percentile(50) / 1000, percentile(99) / 1000)
    }
}

/// A failed load run, as one line.
struct LoadError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
