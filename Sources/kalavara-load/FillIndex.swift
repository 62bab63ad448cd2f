import Foundation
import KalavaraCore
import KalavaraSupport

/// Bulk-loads a master's index with COUNT keys (`bulk-000000001`...) held by one volume,
/// for measuring the master at scale without pushing values through the volumes. Run it
/// with the master stopped; the master then serves those keys like any other.
enum FillIndex {
    static func run(path: String, count: Int, volume: String) throws {
        let index = try Index(path: path)
        defer { index.close() }
        var volumes = try index.volumeURLs()
        if !volumes.contains(volume) {
            volumes.append(volume)
            try index.setVolumeURLs(volumes)
        }
        let id = UInt16(volumes.firstIndex(of: volume)!)
        let start = monotonicSeconds()
        var changes = Index.Changes()
        var pending = 0
        for number in 0..<count {
            let key = try Key(String(format: "bulk-%09d", number))
            changes.setRecord(IndexRecord(version: UInt64(number + 1), size: 1024, holders: [id]), for: key)
            pending += 1
            if pending == 10_000 {
                try index.apply(changes)
                changes = Index.Changes()
                pending = 0
            }
        }
        try index.apply(changes)
        try index.flush()
        try index.compact()
        print(String(format: "fill-index: %d keys in %.1f s", count, monotonicSeconds() - start))
    }
}
