import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
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
        // An HTTP/1.0 client, which knows no chunked bodies, gets the page whole.
        let (status, output) = try runTool("curl", ["-s", "--http1.0", cluster.masterURL + "/store/?limit=3"])
        XCTAssertEqual(status, 0)
        let old = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], output)
        XCTAssertEqual(old["keys"] as? [String], Array(keys.sorted().prefix(3)))
    }

    /// `count` keys of 1,024 bytes, mostly control characters (six bytes each in JSON,
    /// `\u0001`), each with a 1-byte value.
    private func fillControlKeys(_ cluster: TestCluster, count: Int) throws {
        let paths = try (0..<count).map {
            try Key(Array(String(format: "c/%05d", $0).utf8) + [UInt8](repeating: 1, count: Key.maxBytes - 7)).pathComponent
        }
        let failures = Atomic(0)
        let base = cluster.masterURL + "/store/"
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for index in stride(from: worker, to: count, by: 8) {
                if (try? HTTP.follow("PUT", base + paths[index], body: [1]))?.status != 201 { failures.wrappingAdd(1, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
    }

    /// A page is bounded by its JSON, not its raw keys: 1,024-byte keys of control
    /// characters are 6 KiB each as JSON, and a page of 1 MiB of them was 6 MiB. Slow readers,
    /// HTTP/1.0 ones (whose answer is built whole) among them, then keep the master small
    /// under a small `--listing-memory`; a listing past the budget gets 503 with Retry-After.
    ///
    /// A reader past the budget cannot be provoked by stalling readers alone: Linux lets a
    /// loopback socket buffer 4 MiB, so a page of 1 MiB is handed to the kernel whole and
    /// its budget comes back at once. `ListingBudgetTests` checks the refusal itself.
    func testSlowListingReadersOfControlCharacterKeysHoldPagesOfAtMostAMebibyteOfJSON() throws {
        let cluster = try TestCluster.started(masterExtra: ["--listing-memory", "4"])
        defer { cluster.shutdown() }
        let master = try XCTUnwrap(cluster.master)
        try fillControlKeys(cluster, count: 1200)
        let page = try HTTP.send("GET", cluster.masterURL + "/store/?prefix=c/&limit=10000")
        XCTAssertEqual(page.status, 200)
        XCTAssertLessThan(page.body.count, (1 << 20) + (64 << 10), "a page's JSON is bounded, control characters and all")
        let keys = try XCTUnwrap((JSONSerialization.jsonObject(with: Data(page.body)) as? [String: Any])?["keys"] as? [String])
        XCTAssertGreaterThan(keys.count, 100)
        let before = memory(of: master)

        var readers: [Int32] = []
        defer { readers.forEach { close($0) } }
        for version in ["1.0", "1.1"] {
            let request = "GET /store/?prefix=c/&limit=10000 HTTP/\(version)\r\nHost: kalavara\r\n\r\n"
            for _ in 0..<20 { readers.append(slowReader(port: cluster.masterPort, request)) }
        }
        let url = cluster.masterURL + "/store/?prefix=c/&limit=10000"
        let answered = Atomic(0)
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            guard let answer = try? HTTP.send("GET", url) else { return }
            if answer.status == 200 || (answer.status == 503 && answer.headers["Retry-After"] == "1") {
                answered.wrappingAdd(1, ordering: .relaxed)
            }
        }
        XCTAssertEqual(answered.load(ordering: .relaxed), 8, "a page, or 503 with Retry-After")
        let peak = memory(of: master).peak
        print("master memory: \(before.now) MiB before, VmHWM \(peak) MiB under 40 slow listings of control characters")
        XCTAssertLessThan(peak - before.peak, 64, "MiB the master grew under 40 slow readers of 1 MiB pages")
        XCTAssertTrue(master.isRunning)
    }

    // MARK: A full index disk

    /// A cluster whose master keeps its index on a tmpfs of `megabytes` (the test runs as
    /// root), with a filler file of `fillerMegabytes` on it.
    private func clusterWithSmallIndexDisk(megabytes: Int, fillerMegabytes: Int, masterExtra: [String]) throws
        -> (cluster: TestCluster, disk: String, filler: String) {
        let cluster = try TestCluster()
        let disk = cluster.root + "/small-index"
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        guard try runTool("mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", disk]).status == 0 else {
            cluster.shutdown()
            throw XCTSkip("needs the right to mount a tmpfs")
        }
        let filler = disk + "/filler"
        if fillerMegabytes > 0 {
            _ = try runTool("dd", ["if=/dev/zero", "of=\(filler)", "bs=1M", "count=\(fillerMegabytes)"])
        }
        let volume = try cluster.startVolume()
        try cluster.startMaster(volumePorts: [volume], extra: ["-d", disk + "/db"] + masterExtra)
        return (cluster, disk, filler)
    }

    private func unmount(_ disk: String) { _ = try? runTool("umount", ["-l", disk]) }

    /// A PUT of a 1-byte value with a key of about 1,000 bytes and 4 KiB of attributes.
    private func putLarge(_ cluster: TestCluster, _ number: Int) throws -> HTTP.Answer {
        let key = String(format: "fill/%06d-", number) + String(repeating: "k", count: 990)
        return try HTTP.follow("PUT", cluster.masterURL + "/store/" + key, body: [7],
                               headers: [(VolumeHeaders.attributes, String(repeating: "a", count: IndexRecord.maxAttributeBytes))])
    }

    func testTheFreeSpaceGuardRefusesWritesWith507BeforeTheIndexDiskIsFullAndWritesResumeWhenSpaceReturns() throws {
        let (cluster, disk, filler) = try clusterWithSmallIndexDisk(megabytes: 16, fillerMegabytes: 9,
                                                                    masterExtra: ["--index-reserve", "2"])
        defer { cluster.shutdown(); unmount(disk) }
        let master = try XCTUnwrap(cluster.master)
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/early", body: Array("kept".utf8)).status, 201)

        // Small values with large keys and attributes fill the index; the guard answers 507
        // while the reserve is still free, so RocksDB never meets a full disk.
        var refused: HTTP.Answer?
        var written = 0
        for number in 0..<3000 {
            let answer = try putLarge(cluster, number)
            if answer.status == 507 { refused = answer; break }
            XCTAssertEqual(answer.status, 201, answer.text)
            guard answer.status == 201 else { break }
            written += 1
        }
        let full = try XCTUnwrap(refused, "no 507 after 3,000 writes of 5 KiB records")
        XCTAssertTrue(full.text.contains("index disk full"), full.text)
        XCTAssertEqual(full.text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count, 1, full.text)
        XCTAssertGreaterThan(written, 10)
        XCTAssertGreaterThanOrEqual(FileStore.freeBytes(at: disk), 2 << 20, "the reserve is left free")
        XCTAssertEqual(try putLarge(cluster, 99_999).status, 507)

        // Reads go on.
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/?prefix=fill/&limit=5").status, 200)

        // Space comes back: writes resume, without a restart.
        try FileManager.default.removeItem(atPath: filler)
        XCTAssertEqual(try putLarge(cluster, 100_000).status, 201)
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/late", body: [1]).status, 201)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")
        XCTAssertTrue(master.isRunning)
    }

    /// The guard sees the filler before RocksDB does: writes are held off (507) and resume
    /// by a reopen once the filler is gone. A write that RocksDB itself fails for want of
    /// space (held off, then reopened) is not reached here, and cannot be safely: Debian's
    /// RocksDB aborts the process in that very write (`sync_without_flush_called_`) instead
    /// of returning ENOSPC, so the guard exists precisely to keep RocksDB from meeting it.
    func testAFillerTakingTheIndexDiskBehindRocksDBsBackIsA507NotAnAbortAndWritesResume() throws {
        let (cluster, disk, filler) = try clusterWithSmallIndexDisk(megabytes: 16, fillerMegabytes: 0,
                                                                    masterExtra: ["--index-reserve", "1"])
        defer { cluster.shutdown(); unmount(disk) }
        let master = try XCTUnwrap(cluster.master)
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/early", body: Array("kept".utf8)).status, 201)
        XCTAssertEqual(try putLarge(cluster, 0).status, 201)
        // Behind RocksDB's back, a filler file takes every free byte: its next log write
        // would fail, and Debian's RocksDB aborts in that call (`sync_without_flush_called_`).
        _ = try runTool("dd", ["if=/dev/zero", "of=\(filler)", "bs=64k"])
        XCTAssertLessThan(FileStore.freeBytes(at: disk), 64 * 1024)

        for number in 1...20 {
            let answer = try putLarge(cluster, number)
            XCTAssertTrue([503, 507].contains(answer.status), "\(answer.status) \(answer.text)")
            XCTAssertTrue(answer.text.contains("index disk full"), answer.text)
        }
        let small = try HTTP.follow("PUT", cluster.masterURL + "/store/small", body: [1])
        XCTAssertEqual(small.status, 507, small.text)
        let delete = try HTTP.follow("DELETE", cluster.masterURL + "/store/early")
        XCTAssertEqual(delete.status, 507, delete.text)
        XCTAssertTrue(master.isRunning, "the master exited:\n\(cluster.logText().suffix(2000))")
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")

        try FileManager.default.removeItem(atPath: filler)
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/late", body: Array("again".utf8)).status, 201)
        XCTAssertEqual(try putLarge(cluster, 1000).status, 201)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/late").text, "again")
        XCTAssertTrue(cluster.logText().contains("index reopened for writing"),
                      "a disk below what a write needs holds writes off until a reopen (a background error cleared)")
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")
        XCTAssertTrue(master.isRunning)
    }

    /// A master started on an index disk with less than its reserve free opens the index
    /// read-only (opened for writing, its first flush or compaction could meet a full disk),
    /// and reopens it for writing once space returns.
    func testAMasterStartedWithLessThanItsReserveFreeOpensTheIndexReadOnlyAndReopensItLater() throws {
        let (cluster, disk, filler) = try clusterWithSmallIndexDisk(megabytes: 16, fillerMegabytes: 0,
                                                                    masterExtra: ["--index-reserve", "8"])
        defer { cluster.shutdown(); unmount(disk) }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/early", body: Array("kept".utf8)).status, 201)
        cluster.killMaster()
        cluster.master?.waitUntilExit()
        _ = try runTool("dd", ["if=/dev/zero", "of=\(filler)", "bs=1M", "count=10"])
        XCTAssertLessThan(FileStore.freeBytes(at: disk), 8 << 20)
        XCTAssertGreaterThan(FileStore.freeBytes(at: disk), 1 << 20)

        try cluster.restartMaster()
        XCTAssertTrue(cluster.logText().contains("index opened read-only"), cluster.logText().suffix(2000).description)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/late", body: [1]).status, 507)

        try FileManager.default.removeItem(atPath: filler)
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/late", body: Array("again".utf8)).status, 201)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/late").text, "again")
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")
        XCTAssertTrue(cluster.master?.isRunning ?? false)
    }
}
