import Foundation
import KalavaraCore
import Synchronization
import XCTest

/// Issue 21, the index's items: what a full index disk and a flood of slow listings do to
/// the master (real processes on 127.0.0.1).
final class OutsiderIndexTests: XCTestCase {
    /// The master's resident memory now and at its peak, in MiB, from /proc.
    private func memory(of process: Process) -> (now: Int, peak: Int) {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// A socket to the master that sends `request`, reads a few bytes of the answer, then
    /// stops reading (a tiny receive buffer, so the master's writes soon block).
    private func slowReader(port: Int, _ request: String) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var small: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        _ = Array(request.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var scratch = [UInt8](repeating: 0, count: 64)
        _ = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return fd
    }

    /// `count` keys of about 1,000 bytes with 4 KiB of attributes each, written by PUTs
    /// through the master (the attributes ride on the volume's commit into the index).
    private func fillLongKeys(_ cluster: TestCluster, count: Int) -> [String] {
        let keys = (0..<count).map { String(format: "long/%05d-", $0) + String(repeating: "k", count: 990) }
        let attributes = String(repeating: "a", count: IndexRecord.maxAttributeBytes)
        let failures = Atomic(0)
        let base = cluster.masterURL + "/store/"
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for index in stride(from: worker, to: count, by: 8) {
                let answer = try? HTTP.follow("PUT", base + keys[index], body: [1],
                                              headers: [(VolumeHeaders.attributes, attributes)])
                if answer?.status != 201 { failures.wrappingAdd(1, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        return keys
    }

    func testFortySlowListingReadersKeepTheMasterSmallAndPagesStopAtTheirByteBudget() throws {
        let cluster = try TestCluster.started()
        defer { cluster.shutdown() }
        let master = try XCTUnwrap(cluster.master)
        let keys = fillLongKeys(cluster, count: 3000)
        let before = memory(of: master)

        // Each full page would be 3,000 entries of 5 KiB: 16 MiB of JSON, held until sent.
        let request = "GET /store/?limit=10000&detail=1 HTTP/1.1\r\nHost: kalavara\r\n\r\n"
        var readers: [Int32] = []
        defer { readers.forEach { close($0) } }
        for _ in 0..<40 { readers.append(slowReader(port: cluster.masterPort, request)) }
        var worst = memory(of: master).now
        let deadline = monotonicSeconds() + 4
        while monotonicSeconds() < deadline {
            worst = max(worst, memory(of: master).now)
            usleep(100_000)
        }
        let peak = memory(of: master).peak
        print("master memory: \(before.now) MiB before, \(worst) MiB under 40 slow listings (VmHWM \(peak) MiB)")
        XCTAssertLessThan(peak, 300, "VmHWM in MiB under 40 slow readers of limit=10000&detail=1")
        XCTAssertTrue(master.isRunning)
        readers.forEach { close($0) }
        readers = []

        // Pages end at their byte budget, with `next`; followed to the end, they list every
        // key exactly once, each with its attributes.
        var seen: [String] = []
        var after: String?
        var pages = 0
        repeat {
            var url = cluster.masterURL + "/store/?limit=10000&detail=1"
            if let after { url += "&after=" + PercentEncoding.encode(after) }
            var answer = try HTTP.send("GET", url)
            for _ in 0..<50 where answer.status == 503 { // the stalled readers' budget comes back
                usleep(100_000)
                answer = try HTTP.send("GET", url)
            }
            XCTAssertEqual(answer.status, 200, answer.text)
            let page = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])
            let pageKeys = try XCTUnwrap(page["keys"] as? [String])
            let details = try XCTUnwrap(page["details"] as? [[String: Any]])
            XCTAssertEqual(details.count, pageKeys.count)
            XCTAssertEqual(details.first?["attributes"] as? String, String(repeating: "a", count: IndexRecord.maxAttributeBytes))
            seen += pageKeys
            after = page["next"] as? String
            pages += 1
        } while after != nil && pages < 1000
        XCTAssertEqual(seen, keys.sorted())
        XCTAssertGreaterThan(pages, 5, "3,000 entries of 5 KiB are more than a page's byte budget")
    }
}
