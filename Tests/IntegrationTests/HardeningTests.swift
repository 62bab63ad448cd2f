import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import TestSupport
import XCTest

/// Hostile and careless clients, full disks, signals and memory, against the real daemons.
final class HardeningTests: XCTestCase {
    private func connect(_ port: Int) throws -> BufferedSocket {
        try HTTPClient.connect(HTTPURL("http://127.0.0.1:\(port)")!, timeout: 5)
    }

    /// Reads until the peer closes; returns what arrived and how long it took.
    private func readUntilClosed(_ socket: BufferedSocket, limit: Double = 10) -> (text: String, seconds: Double) {
        let start = monotonicSeconds()
        socket.setReceiveTimeout(limit)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while monotonicSeconds() - start < limit {
            guard let count = try? buffer.withUnsafeMutableBytes({ try socket.read(into: $0) }), count > 0 else { break }
            received += buffer[0..<count]
        }
        return (String(decoding: received, as: UTF8.self), monotonicSeconds() - start)
    }

    private func timedHealth(_ base: String) throws -> Double {
        let start = monotonicSeconds()
        XCTAssertEqual(try HTTP.send("GET", base + "/health").status, 200)
        return monotonicSeconds() - start
    }

    func testStalledAndTricklingClientsAreDroppedWithoutDelayingOthers() throws {
        let cluster = try TestCluster.started(volumes: 1, masterExtra: ["--read-timeout", "1"])
        defer { cluster.shutdown() }
        // Half a head, then nothing.
        let stalled = try connect(cluster.masterPort)
        try stalled.write(Array("GET /health HTTP/1.1\r\nHost: x".utf8))
        // A head that trickles in a byte at a time, forever.
        let trickler = try connect(cluster.masterPort)
        let trickling = Thread {
            for byte in Array("GET /health HTTP/1.1\r\nX-Slow: ".utf8) + [UInt8](repeating: 0x61, count: 100) {
                guard (try? trickler.write([byte])) != nil else { return }
                usleep(200_000)
            }
        }
        trickling.start()
        // Other clients are served at once meanwhile.
        for _ in 0..<5 { XCTAssertLessThan(try timedHealth(cluster.masterURL), 0.5) }

        let stalledResult = readUntilClosed(stalled)
        XCTAssertTrue(stalledResult.text.hasPrefix("HTTP/1.1 408"), stalledResult.text)
        XCTAssertLessThan(stalledResult.seconds, 3)
        let trickleResult = readUntilClosed(trickler)
        XCTAssertTrue(trickleResult.text.hasPrefix("HTTP/1.1 408"), trickleResult.text)
        XCTAssertLessThan(trickleResult.seconds, 4)
    }

    func testStalledUploadIsDroppedAndLeavesNoTemporaryFile() throws {
        let cluster = try TestCluster.started(volumes: 1, volumeExtra: ["--read-timeout", "1"])
        defer { cluster.shutdown() }
        let location = HTTPURL(try HTTP.send("PUT", cluster.masterURL + "/store/stall").headers["Location"]!)!
        let socket = try connect(location.port)
        try socket.write(Array("PUT \(location.pathAndQuery) HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".utf8) + [UInt8](repeating: 1, count: 10))
        let result = readUntilClosed(socket)
        XCTAssertLessThan(result.seconds, 3)
        XCTAssertTrue(result.text.hasPrefix("HTTP/1.1 408"), result.text)
        try waitUntil("temporary file removed") { cluster.tmpFiles(location.port).isEmpty }
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/stall").status, 404)
    }

    func testIdleKeepAliveConnectionsAreClosed() throws {
        let cluster = try TestCluster.started(volumes: 1, masterExtra: ["--idle-timeout", "1"])
        defer { cluster.shutdown() }
        let socket = try connect(cluster.masterPort)
        try socket.write(Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let result = readUntilClosed(socket)
        XCTAssertTrue(result.text.hasPrefix("HTTP/1.1 200"))
        XCTAssertGreaterThan(result.seconds, 0.8)
        XCTAssertLessThan(result.seconds, 3)
    }

    func testConnectionCapRefusesCleanlyAndRecovers() throws {
        let cluster = try TestCluster.started(volumes: 1, masterExtra: ["--max-connections", "4"])
        defer { cluster.shutdown() }
        usleep(300_000) // let the start-up health probe's connection go
        // Idle connections would be evicted to make room (see OutsiderHTTPTests): these four
        // are busy, each a request whose announced body never comes.
        var held: [BufferedSocket] = []
        for _ in 0..<4 {
            let socket = try connect(cluster.masterPort)
            try socket.write(Array("POST /admin/add-volume HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".utf8))
            held.append(socket)
        }
        usleep(300_000)
        // From an address that is not one of the cluster's daemons (they have a reserve).
        let health = cluster.masterURL + "/health"
        let refused = try runTool("/usr/bin/curl", ["-s", "-i", "--interface", "127.0.0.2", health]).output
        XCTAssertTrue(refused.hasPrefix("HTTP/1.1 503"), refused)
        XCTAssertTrue(refused.contains("Connection: close"), refused)
        // From the volume's address (a cluster peer) it still gets in: the daemons' reserve.
        XCTAssertEqual(try HTTP.send("GET", health).status, 200)
        held.forEach { $0.close() }
        try waitUntil("a slot frees up") {
            (try? runTool("/usr/bin/curl", ["-s", "-i", "--interface", "127.0.0.2", health]).output.hasPrefix("HTTP/1.1 200")) == true
        }
    }

    /// A master's or gateway's concurrent calls to a volume all come from one address: past
    /// `--max-connections-per-address` busy ones, the daemon used to get `503` like an
    /// outsider. The cluster's own addresses are exempt from that cap.
    func testClusterDaemonsAreExemptFromThePerAddressCap() throws {
        let cluster = try TestCluster.started(volumes: 1, masterExtra: ["--max-connections-per-address", "4"])
        defer { cluster.shutdown() }
        usleep(300_000) // let the start-up health probe's connection go
        var held: [BufferedSocket] = []
        defer { held.forEach { $0.close() } }
        for _ in 0..<4 {
            let socket = try connect(cluster.masterPort)
            try socket.write(Array("POST /admin/add-volume HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".utf8))
            held.append(socket)
        }
        usleep(300_000)
        // 127.0.0.1 is the volume's address: four busy requests from it, and a fifth gets in.
        let answer = try HTTP.send("GET", cluster.masterURL + "/health")
        XCTAssertEqual(answer.status, 200, answer.text)
    }

    func testFullDiskAnswers507KeepsEarlierValuesAndServing() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        let small = cluster.root + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        let mounted = try runTool("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", small]).status == 0
        defer { if mounted { _ = try? runTool("umount", ["-l", small]) } }
        let port = freeLoopbackPort()
        let volume = [TestCluster.binDirectory + "/volume", "-p", String(port), "-d", small + "/volume", "--bind", "127.0.0.1"]
        // Without the right to mount, a 3 MiB file size limit stands in for the small disk.
        let command = mounted ? volume : ["/usr/bin/prlimit", "--fsize=3145728"] + volume
        cluster.volumes[port] = try cluster.launch(command[0], Array(command.dropFirst()), log: "volume")
        try cluster.waitForHealth(cluster.volumeURL(port))
        try cluster.startMaster(volumePorts: [port])

        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/early", body: Array("kept".utf8)).status, 201)
        let big = [UInt8](repeating: 9, count: 4 << 20)
        let full = try HTTP.follow("PUT", cluster.masterURL + "/store/too-big", body: big)
        XCTAssertEqual(full.status, 507, full.text)
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: small + "/volume/tmp")) ?? ["?"], [])
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/too-big").status, 404)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/small", body: [1, 2]).status, 201)
    }

    func testMasterStartedOnAFullIndexDiskServesReadsRefusesWritesAndRecovers() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        let small = cluster.root + "/small-index"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        guard try runTool("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", small]).status == 0 else {
            throw XCTSkip("needs the right to mount a tmpfs")
        }
        defer { _ = try? runTool("umount", ["-l", small]) }
        let volume = try cluster.startVolume()
        // An index made, then its disk filled up to the last byte while the master was down.
        try cluster.startMaster(volumePorts: [volume], extra: ["-d", small + "/db", "--index-reserve", "0"])
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/early", body: Array("kept".utf8)).status, 201)
        cluster.killMaster()
        cluster.master?.waitUntilExit()
        _ = try runTool("dd", ["if=/dev/zero", "of=\(small)/fill", "bs=64k"])

        // It opens the index read-only (a writable open would abort in RocksDB): reads are
        // served, writes get a one-line 507.
        try cluster.restartMaster()
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")
        let refused = try HTTP.follow("PUT", cluster.masterURL + "/store/late", body: [1])
        XCTAssertEqual(refused.status, 507, refused.text)
        XCTAssertTrue(refused.text.contains("index disk full"), refused.text)
        XCTAssertEqual(refused.text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count, 1, refused.text)
        XCTAssertTrue(cluster.logText().contains("index opened read-only"))

        // Space comes back: the next write reopens the index for writing.
        try FileManager.default.removeItem(atPath: small + "/fill")
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/late", body: [1]).status, 201)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/early").text, "kept")
        XCTAssertTrue(cluster.master?.isRunning ?? false)
    }

    func testIdleConnectionsUnderTheDefaultOpenFileLimitGet503NotAHang() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        let port = freeLoopbackPort()
        let master = [TestCluster.binDirectory + "/master", "-p", String(port), "-d", cluster.root + "/db", "--bind", "127.0.0.1"]
        // Debian's default: 1,024 descriptors, soft and hard; --max-connections left at 1,024.
        let process = try cluster.launch("/usr/bin/prlimit", ["--nofile=1024:1024"] + master, log: "master")
        cluster.volumes[port] = process
        let url = "http://127.0.0.1:\(port)"
        try cluster.waitForHealth(url)
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<900 { // more than the 768 it can admit; fewer than this test process may open
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if connected == 0 { idle.append(fd) } else { close(fd) }
        }
        usleep(500_000)
        // Silent sockets hold at most a quarter of the slots (the oldest are evicted): a new
        // client is served at once, and the master lives.
        let started = monotonicSeconds()
        let full = try HTTP.send("GET", url + "/health", timeout: 5)
        XCTAssertEqual(full.status, 200, full.text)
        XCTAssertLessThan(monotonicSeconds() - started, 2)
        XCTAssertTrue(process.isRunning)
        idle.forEach { close($0) }
        idle = []
        try waitUntil("served again", timeout: 10) { (try? HTTP.send("GET", url + "/health", timeout: 2))?.status == 200 }
        XCTAssertTrue(cluster.logText().contains("--max-connections lowered from 1024 to 768"))
    }

    func testSocketsThatSendNothingLoseTheirSlotsAfterTheHeadTimeout() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        try cluster.startMaster(volumePorts: [], extra: ["--max-connections", "20", "--head-timeout", "1"])
        func open() -> Int32 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = in_port_t(UInt16(cluster.masterPort).bigEndian)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            return fd
        }
        // A keep-alive client that has been served keeps its connection past the head timeout.
        let client = HTTPClient(timeout: 5, maxIdlePerHost: 1)
        let health = HTTPURL(cluster.masterURL + "/health")!
        XCTAssertEqual(try client.send("GET", health).status, 200)
        // Twenty sockets that send nothing would fill every slot; those without a head have
        // a cap of their own (8 here), past which the oldest is evicted: real clients get in.
        let silent = (0..<20).map { _ in open() }
        defer { silent.forEach { close($0) } }
        usleep(300_000)
        for _ in 0..<5 { XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/health").status, 200) }
        var closed = 0
        for fd in silent {
            var byte: UInt8 = 0
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 0) == 1, recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) == 0 { closed += 1 }
        }
        XCTAssertGreaterThanOrEqual(closed, 12, "the oldest silent sockets were evicted")
        // The rest go after the head timeout, not the 30 s idle timeout. A trickled head goes too.
        let trickle = open()
        defer { close(trickle) }
        _ = Array("GET /health HTTP/1.1\r\n".utf8).withUnsafeBytes { send(trickle, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        for _ in 0..<6 {
            _ = Array("X".utf8).withUnsafeBytes { send(trickle, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            usleep(300_000)
        }
        var answer = [UInt8](repeating: 0, count: 512)
        let count = answer.withUnsafeMutableBytes { recv(trickle, $0.baseAddress, $0.count, 0) }
        XCTAssertTrue(String(decoding: answer.prefix(max(count, 0)), as: UTF8.self).hasPrefix("HTTP/1.1 408"),
                      "the trickled head is answered 408: \(String(decoding: answer.prefix(max(count, 0)), as: UTF8.self))")
        usleep(1_200_000)
        XCTAssertEqual(try client.send("GET", health).status, 200, "the served connection is still usable")
    }

    func testThousandsOfGarbageRequestsLeaveDaemonsCorrect() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/survivor", body: Array("intact".utf8)).status, 201)
        var generator = SplitMix64(seed: 7) // the same garbage on every run
        let pieces = ["GET ", "PUT ", "DELETE ", "HEAD ", "/store/", "/health", "%", "%00", " HTTP/1.1", " HTTP/1.0",
                      "\r\n", "\n", "Content-Length: ", "Transfer-Encoding: chunked", "Expect: 100-continue", "0", "5",
                      "ffffffff", ":", " ", "\u{0}", "Range: bytes=", "-", "Connection: close"]
        let deadline = monotonicSeconds() + 60
        var sent = 0
        for port in [cluster.masterPort, cluster.volumePorts[0]] {
            for _ in 0..<1500 where monotonicSeconds() < deadline {
                var bytes: [UInt8] = []
                for _ in 0..<Int.random(in: 1...30, using: &generator) {
                    if Int.random(in: 0..<5, using: &generator) == 0 {
                        bytes += (0..<Int.random(in: 1...20, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                    } else {
                        bytes += Array(pieces.randomElement(using: &generator)!.utf8)
                    }
                }
                if Bool.random(using: &generator) { bytes += Array("\r\n\r\n".utf8) }
                guard let socket = try? connect(port) else { continue }
                socket.setReceiveTimeout(0.2)
                try? socket.write(bytes)
                shutdown(socket.fd, Int32(SHUT_WR))
                var scratch = [UInt8](repeating: 0, count: 4096)
                _ = try? scratch.withUnsafeMutableBytes { try socket.read(into: $0) }
                socket.close()
                sent += 1
            }
        }
        XCTAssertGreaterThan(sent, 2000)
        for base in [cluster.masterURL, cluster.volumeURL(cluster.volumePorts[0])] {
            XCTAssertEqual(try HTTP.send("GET", base + "/health").status, 200)
        }
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/survivor").text, "intact")
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/after", body: [1]).status, 201)
        XCTAssertTrue(cluster.master!.isRunning)
    }

    func testShutdownFinishesRequestInFlightThenExits0() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let location = HTTPURL(try HTTP.send("PUT", cluster.masterURL + "/store/inflight").headers["Location"]!)!
        let socket = try connect(location.port)
        try socket.write(Array("PUT \(location.pathAndQuery) HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345".utf8))
        usleep(200_000)
        let volume = cluster.volumes[location.port]!
        kill(volume.processIdentifier, SIGTERM)
        usleep(300_000)
        XCTAssertTrue(volume.isRunning, "the volume must wait for the request in flight")
        XCTAssertThrowsError(try HTTP.send("GET", cluster.volumeURL(location.port) + "/health", timeout: 1),
                             "no new connections once stopping")
        try socket.write(Array("67890".utf8))
        let answer = readUntilClosed(socket)
        XCTAssertTrue(answer.text.hasPrefix("HTTP/1.1 201"), answer.text)
        XCTAssertTrue(answer.text.contains("Connection: close"), answer.text)
        volume.waitUntilExit()
        XCTAssertEqual(volume.terminationStatus, 0)
    }

    func testSecondSignalExitsAtOnce() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let port = cluster.volumePorts[0]
        let location = HTTPURL(try HTTP.send("PUT", cluster.masterURL + "/store/stuck").headers["Location"]!)!
        let socket = try connect(port)
        try socket.write(Array("PUT \(location.pathAndQuery) HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n1".utf8))
        usleep(200_000)
        let volume = cluster.volumes[port]!
        kill(volume.processIdentifier, SIGTERM)
        usleep(300_000)
        XCTAssertTrue(volume.isRunning)
        let start = monotonicSeconds()
        kill(volume.processIdentifier, SIGINT)
        volume.waitUntilExit()
        XCTAssertLessThan(monotonicSeconds() - start, 2)
        XCTAssertNotEqual(volume.terminationStatus, 0)
        socket.close()
    }

    func testOneGibibyteValueKeepsMemoryFlat() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let file = cluster.root + "/1g.bin"
        XCTAssertEqual(try runTool("truncate", ["-s", "1G", file]).status, 0)
        var result = try runTool("curl", ["-sS", "-L", "-T", file, cluster.masterURL + "/store/huge", "-w", "%{http_code}"])
        XCTAssertTrue(result.output.hasSuffix("201"), result.output)
        result = try runTool("curl", ["-sS", "-L", "-o", "/dev/null", cluster.masterURL + "/store/huge", "-w", "%{http_code} %{size_download}"])
        XCTAssertEqual(result.output, "200 1073741824")
        let volumePeak = peakResidentKiB(cluster.volumes[cluster.volumePorts[0]]!.processIdentifier)
        let masterPeak = peakResidentKiB(cluster.master!.processIdentifier)
        print("peak RSS after a 1 GiB value in and out: volume \(volumePeak / 1024) MiB, master \(masterPeak / 1024) MiB")
        XCTAssertLessThan(volumePeak, 64 * 1024)
        XCTAssertLessThan(masterPeak, 64 * 1024)
    }
}

extension HardeningTests {
    /// Replication streams: the first volume forwards while it writes, so a value costs
    /// the same memory with two copies as with one.
    func testReplicatedLargeValueKeepsMemoryFlat() throws {
        let cluster = try TestCluster.started(volumes: 2, masterExtra: ["--replicas", "2"])
        defer { cluster.shutdown() }
        let file = cluster.root + "/256m.bin"
        XCTAssertEqual(try runTool("truncate", ["-s", "256M", file]).status, 0)
        let result = try runTool("curl", ["-sS", "-L", "-T", file, cluster.masterURL + "/store/big", "-w", "%{http_code}"])
        XCTAssertTrue(result.output.hasSuffix("201"), result.output)
        XCTAssertEqual(cluster.copies(of: "big").count, 2)
        for port in cluster.volumePorts {
            let peak = peakResidentKiB(cluster.volumes[port]!.processIdentifier)
            XCTAssertLessThan(peak, 64 * 1024, "volume \(port) peaked at \(peak / 1024) MiB")
        }
    }
}

/// VmHWM (peak resident set) of a process, in KiB.
func peakResidentKiB(_ pid: Int32) -> Int {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }
    return 0
}

/// Slow and hung peers: a trickled body, a stopped replica.
final class SlowPeerTests: XCTestCase {
    func testTrickledBodyIsDroppedWithItsTemporaryFilesOnEveryReplica() throws {
        let cluster = try TestCluster.started(volumes: 2, masterExtra: ["--replicas", "2"])
        defer { cluster.shutdown() }
        let body = [UInt8](repeating: 7, count: 100_000)
        let location = HTTPURL(try HTTP.send("PUT", cluster.masterURL + "/store/trickle", body: body).headers["Location"]!)!
        let socket = try HTTPClient.connect(location, timeout: 30)
        try socket.write(Array("PUT \(location.pathAndQuery) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\n\r\n".utf8))
        let started = monotonicSeconds()
        // One byte every 0.4 s: under the default 1,024 bytes/s floor, never stalled for the read timeout.
        var answer: [UInt8] = []
        while monotonicSeconds() - started < 25 {
            guard (try? socket.write([7])) != nil else { break }
            var poller = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 400) == 1 {
                var buffer = [UInt8](repeating: 0, count: 1024)
                let count = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress, $0.count, 0) }
                if count > 0 { answer += buffer[0..<count] }
                break
            }
        }
        let elapsed = monotonicSeconds() - started
        XCTAssertTrue(String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.1 408"), String(decoding: answer, as: UTF8.self))
        XCTAssertGreaterThan(elapsed, 9)
        XCTAssertLessThan(elapsed, 16)
        try waitUntil("temporary files gone on both replicas", timeout: 15) {
            cluster.volumePorts.allSatisfy { cluster.tmpFiles($0).isEmpty }
        }
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/trickle").status, 404)
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/after", body: [1, 2, 3]).status, 201)
    }

    func testAStoppedReplicaFailsTheWriteInsteadOfHangingIt() throws {
        let cluster = try TestCluster.started(volumes: 2, masterExtra: ["--replicas", "2"])
        defer {
            for process in cluster.volumes.values { kill(process.processIdentifier, SIGCONT) }
            cluster.shutdown()
        }
        let location = try XCTUnwrap(try HTTP.send("PUT", cluster.masterURL + "/store/hung", body: Array("value".utf8)).headers["Location"])
        let parameters = try QueryParameters(Substring(location.split(separator: "?").last!))
        let second = try XCTUnwrap(parameters["h"]?.split(separator: ",").last.flatMap { HTTPURL(String($0)) })
        let stopped = try XCTUnwrap(cluster.volumes[second.port])
        kill(stopped.processIdentifier, SIGSTOP)
        let started = monotonicSeconds()
        let answer = try HTTP.send("PUT", location, body: Array("value".utf8), timeout: 60)
        let elapsed = monotonicSeconds() - started
        XCTAssertEqual(answer.status, 503, answer.text)
        XCTAssertLessThan(elapsed, 15, "the primary gave up on the hung replica well before a client would")
        kill(stopped.processIdentifier, SIGCONT)
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/hung").status, 404)
    }
}
