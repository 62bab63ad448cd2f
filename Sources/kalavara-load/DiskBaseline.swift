import Foundation
import KalavaraCore
import KalavaraSupport

/// The disk's own limit for durable small writes: threads that each create a 1 KiB file in
/// a temporary directory, write it, fsync it, rename it into place and fsync the directory:
/// the same work a volume does for a PUT, without any HTTP.
enum DiskBaseline {
    static func run(root: String, threads: Int, seconds: Double, size: Int) throws {
        try FileManager.default.createDirectory(atPath: root + "/tmp", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/data", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }

        let total = Counter()
        let group = DispatchGroup()
        let deadline = monotonicSeconds() + seconds
        let start = monotonicSeconds()
        for thread in 0..<threads {
            group.enter()
            Thread {
                let bytes = [UInt8](repeating: 7, count: size)
                var count = 0
                while monotonicSeconds() < deadline {
                    let tmp = "\(root)/tmp/\(thread)-\(count)", final = "\(root)/data/\(thread)-\(count)"
                    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o644)
                    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    fsync(fd)
                    close(fd)
                    rename(tmp, final)
                    let dir = open(root + "/data", O_RDONLY | O_DIRECTORY)
                    fsync(dir)
                    close(dir)
                    count += 1
                }
                total.add(count)
                group.leave()
            }.start()
        }
        group.wait()
        let elapsed = monotonicSeconds() - start
        print(String(format: "disk: %d durable %d-byte files in %.1f s = %.0f files/s (%d threads)",
                     total.value, size, elapsed, Double(total.value) / elapsed, threads))
    }
}

/// A total several threads add to.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
    func add(_ amount: Int) { lock.lock(); count += amount; lock.unlock() }
    /// Returns the current value and counts one up.
    func next() -> Int { lock.lock(); defer { count += 1; lock.unlock() }; return count }
}
