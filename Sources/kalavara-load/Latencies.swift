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

/// Parses `-x value` pairs into a dictionary, for the small option sets of these tools.
func parseFlags(_ arguments: [String], allowed: Set<String>) throws -> [String: String] {
    var flags: [String: String] = [:]
    var index = 0
    while index < arguments.count {
        let flag = arguments[index]
        guard allowed.contains(flag), index + 1 < arguments.count else {
            throw CommandLineOptions.UsageError("unknown option or missing value: \(flag) (options: \(allowed.sorted().joined(separator: " ")))")
        }
        flags[flag] = arguments[index + 1]
        index += 2
    }
    return flags
}
