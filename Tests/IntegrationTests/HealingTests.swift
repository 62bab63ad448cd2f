import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import Synchronization
import XCTest

/// Healing against real processes: volumes lost (kill -9), back, added, drained; an index
/// deleted and rebuilt; bytes flipped on disk; leaked copies; slow readers; and clients
/// writing all the while. Afterwards every key reads its last acknowledged value and has
/// exactly `--replicas` identical copies, on its placement.
final class HealingTests: XCTestCase, @unchecked Sendable {
    var cluster: TestCluster!

    override func tearDown() { cluster?.shutdown() }

    private func start(volumes: Int, replicas: Int, masterExtra: [String] = [], volumeExtra: [String] = []) throws {
        cluster = try TestCluster.started(volumes: volumes, masterExtra: ["--replicas", String(replicas)] + masterExtra,
                                          volumeExtra: volumeExtra)
    }

    private func putEventually(_ key: String, _ value: String) throws {
        try waitUntil("PUT \(key) succeeds", timeout: 20) { (try? cluster.put(key, value))?.status == 201 }
    }

    private func json(_ url: String) -> [String: Any]? {
        guard let answer = try? HTTP.send("GET", url), answer.status == 200 else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(answer.body))) as? [String: Any]
    }

    private func volumeStates() -> [String: String] {
        let volumes = json(cluster.masterURL + "/admin/volumes")?["volumes"] as? [[String: Any]] ?? []
        return Dictionary(uniqueKeysWithValues: volumes.compactMap { entry in
            (entry["url"] as? String).map { ($0, entry["state"] as? String ?? "?") }
        })
    }

    /// What is wrong with the cluster against `expected` (value, or nil for deleted), with
    /// the placement computed over `counting` volumes; nil when all is as it should be.
    private func problems(_ expected: [String: String?], counting: [Int], replicas: Int) -> String? {
        problems(expected.mapValues { [$0] }, counting: counting, replicas: replicas)
    }

    /// The same, with each key allowed any of several outcomes (a write whose answer was
    /// lost may or may not have happened).
    private func problems(_ allowed: [String: [String?]], counting: [Int], replicas: Int) -> String? {
        let urls = counting.map(cluster.volumeURL)
        for (key, outcomes) in allowed.sorted(by: { $0.key < $1.key }) {
            let copies = cluster.copies(of: key)
            guard let answer = try? cluster.get(key, redirects: 3), answer.status == 200 || answer.status == 404 else {
                return "\(key): GET is \((try? cluster.get(key, redirects: 3)).map { "\($0.status) \($0.text)" } ?? "no answer")"
            }
            if answer.status == 404 {
                guard outcomes.contains(where: { $0 == nil }) else { return "\(key): 404, want one of \(outcomes)" }
                if !copies.isEmpty { return "\(key): deleted but copies remain \(copies)" }
                continue
            }
            guard outcomes.contains(answer.text) else { return "\(key): GET is \(answer.text), want one of \(outcomes)" }
            let placement = Set(Placement.order(urls, for: try! Key(key)).prefix(replicas).map { Int($0.split(separator: ":").last!)! })
            guard Set(copies.keys) == placement else { return "\(key): copies on \(copies.keys.sorted()), placement \(placement.sorted())" }
            guard copies.values.allSatisfy({ $0.count == 1 }) else { return "\(key): more than one version \(copies)" }
            guard Set(copies.values.map { $0[0] }).count == 1, Set(cluster.copyContents(of: key)).count == 1 else {
                return "\(key): copies differ \(copies)"
            }
        }
        return nil
    }

    private func assertConverged(_ expected: [String: String?], counting: [Int], replicas: Int, timeout: Double = 40,
                                 file: StaticString = #filePath, line: UInt = #line) {
        assertConverged(allowing: expected.mapValues { [$0] }, counting: counting, replicas: replicas, timeout: timeout,
                        file: file, line: line)
    }

    private func assertConverged(allowing allowed: [String: [String?]], counting: [Int], replicas: Int, timeout: Double = 40,
                                 file: StaticString = #filePath, line: UInt = #line) {
        var last: String?
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            last = problems(allowed, counting: counting, replicas: replicas)
            if last == nil { return }
            usleep(250_000)
        } while Date() < deadline
        XCTFail("not converged after \(timeout) s: \(last ?? "")\nrepair: \(json(cluster.masterURL + "/admin/repair") ?? [:])\n"
                + String(cluster.logText().suffix(6000)), file: file, line: line)
    }

    // MARK: Triggers

    func testALostVolumeIsReReplicatedAndItsStaleCopiesGoWhenItComesBack() throws {
        try start(volumes: 4, replicas: 2, masterExtra: ["--out-after", "2"])
        var expected: [String: String?] = [:]
        for index in 0..<40 {
            XCTAssertEqual(try cluster.put("lost\(index)", "value \(index)").status, 201)
            expected["lost\(index)"] = "value \(index)"
        }
        let ports = cluster.volumePorts
        let victim = ports[1]
        cluster.killVolume(victim)
        try waitUntil("the victim is out", timeout: 15) { volumeStates()[cluster.volumeURL(victim)] == "out" }
        // Every key back at two copies, on the volumes that count.
        try waitUntil("re-replicated", timeout: 30) {
            expected.keys.allSatisfy { key in cluster.copies(of: key).keys.filter { $0 != victim }.count == 2 }
        }
        let repair = json(cluster.masterURL + "/admin/repair") ?? [:]
        XCTAssertGreaterThan(repair["copied"] as? Int ?? 0, 0, "\(repair)")
        XCTAssertNotNil(repair["last_pass_finished"] as? Int)
        let metrics = try HTTP.send("GET", cluster.masterURL + "/metrics").text
        XCTAssertTrue(metrics.contains("kalavara_repair_copies_total"), metrics)
        XCTAssertTrue(metrics.contains("kalavara_volumes{state=\"out\"} 1"), metrics)
        // Writes while it is out go elsewhere.
        XCTAssertEqual(try cluster.put("lost0", "rewritten").status, 201)
        expected["lost0"] = "rewritten"

        // Back: it is up again, the placement includes it again, and its stale copies go.
        try cluster.startVolume(port: victim)
        try waitUntil("the victim is up", timeout: 10) { volumeStates()[cluster.volumeURL(victim)] == "up" }
        assertConverged(expected, counting: ports, replicas: 2)
    }

    func testWritesMadeWhileAVolumeIsDownMoveToItWhenItIsBack() throws {
        try start(volumes: 3, replicas: 2)
        let ports = cluster.volumePorts
        let victim = ports[0]
        cluster.killVolume(victim)
        try waitUntil("the victim is down", timeout: 10) { volumeStates()[cluster.volumeURL(victim)] == "down" }
        var expected: [String: String?] = [:]
        for index in 0..<30 {
            try putEventually("sub\(index)", "written while down \(index)")
            expected["sub\(index)"] = "written while down \(index)"
        }
        // Down is not out: nothing is re-replicated, the substitutes hold the keys.
        XCTAssertEqual(json(cluster.masterURL + "/admin/repair")?["copied"] as? Int, 0)
        try cluster.startVolume(port: victim)
        assertConverged(expected, counting: ports, replicas: 2)
        XCTAssertFalse(cluster.valueFiles(victim).isEmpty)
    }

    func testAddVolumeRebalancesAndRemoveVolumeDrainsIt() throws {
        try start(volumes: 2, replicas: 1)
        var expected: [String: String?] = [:]
        for index in 0..<60 {
            XCTAssertEqual(try cluster.put("bal\(index)", "v\(index)").status, 201)
            expected["bal\(index)"] = "v\(index)"
        }
        let added = try cluster.startVolume()
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(cluster.volumeURL(added).utf8)).status, 200)
        assertConverged(expected, counting: cluster.volumePorts, replicas: 1)
        XCTAssertFalse(cluster.valueFiles(added).isEmpty, "the new volume got its share")

        // Drain one of the first two.
        let drained = cluster.volumePorts.first { $0 != added }!
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/remove-volume", body: Array("http://127.0.0.1:1".utf8)).status, 404)
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/remove-volume", body: Array("nonsense".utf8)).status, 400)
        for _ in 0..<2 {
            XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/remove-volume", body: Array(cluster.volumeURL(drained).utf8)).status, 202)
        }
        // While draining it takes no new writes.
        for index in 0..<20 {
            let answer = try HTTP.send("PUT", cluster.masterURL + "/store/new\(index)")
            XCTAssertFalse(answer.headers["Location"]?.hasPrefix(cluster.volumeURL(drained)) ?? false)
        }
        try waitUntil("the drained volume leaves the registry", timeout: 30) {
            volumeStates()[cluster.volumeURL(drained)] == nil && volumeStates().count == 2
        }
        let remaining = cluster.volumePorts.filter { $0 != drained }
        for key in expected.keys {
            XCTAssertEqual(try cluster.get(key, redirects: 3).text, expected[key]!, key)
            XCTAssertEqual(cluster.copies(of: key).keys.filter(remaining.contains).count, 1, key)
        }
        // Its heartbeat does not bring it back; an operator's add does.
        cluster.killVolume(drained)
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(cluster.volumeURL(drained).utf8),
                                     headers: [("Kalavara-Heartbeat", "1")]).status, 410)
        XCTAssertNil(volumeStates()[cluster.volumeURL(drained)])
    }

    // MARK: Rebuild

    func testAnIndexDeletedAndRebuiltFromTheVolumes() throws {
        try start(volumes: 3, replicas: 2)
        var expected: [String: String?] = [:]
        for index in 0..<50 {
            XCTAssertEqual(try cluster.put("re\(index)", "first \(index)").status, 201)
            expected["re\(index)"] = "first \(index)"
        }
        for index in 0..<10 {
            XCTAssertEqual(try cluster.put("re\(index)", "second \(index)").status, 201)
            expected["re\(index)"] = "second \(index)"
        }
        for index in 40..<45 {
            XCTAssertEqual(try HTTP.follow("DELETE", cluster.masterURL + "/store/re\(index)").status, 204)
            expected["re\(index)"] = .some(nil)
        }
        sleep(3) // superseded copies dropped
        cluster.killMaster()
        try FileManager.default.removeItem(atPath: cluster.databasePath)
        try cluster.restartMaster()
        XCTAssertEqual(try cluster.get("re1", redirects: 3).status, 404, "an empty index knows nothing before a rebuild")

        // One volume stopped: the rebuild waits for it, and meanwhile answers 503 for what it
        // has not found, never 404; PUTs work.
        let stopped = cluster.volumePorts[0]
        kill(cluster.volumes[stopped]!.processIdentifier, SIGSTOP)
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/rebuild").status, 202)
        try waitUntil("the others are read", timeout: 20) {
            (json(cluster.masterURL + "/admin/rebuild")?["volumes_done"] as? Int) == 2
        }
        XCTAssertEqual(json(cluster.masterURL + "/admin/rebuild")?["running"] as? Bool, true)
        XCTAssertEqual(try cluster.get("never-existed", redirects: 3).status, 503)
        XCTAssertEqual(try HTTP.send("DELETE", cluster.masterURL + "/store/never-existed").status, 503)
        // Writes avoid the stopped volume once its health checks have failed.
        try waitUntil("the stopped volume is down", timeout: 15) { volumeStates()[cluster.volumeURL(stopped)] == "down" }
        XCTAssertEqual(try cluster.put("fresh", "written during the rebuild").status, 201)
        expected["fresh"] = "written during the rebuild"
        kill(cluster.volumes[stopped]!.processIdentifier, SIGCONT)
        try waitUntil("rebuild finished", timeout: 30) {
            (json(cluster.masterURL + "/admin/rebuild")?["running"] as? Bool) == false
        }
        let rebuild = json(cluster.masterURL + "/admin/rebuild") ?? [:]
        XCTAssertEqual(rebuild["volumes_total"] as? Int, 3)
        // 45 keys live on the volumes; "fresh" was in the index already when its file was seen.
        XCTAssertEqual(rebuild["keys_found"] as? Int, 45, "\(rebuild)")
        XCTAssertEqual(try cluster.get("never-existed", redirects: 3).status, 404)
        // The clock moved past every version seen: an overwrite wins over the rebuilt value.
        XCTAssertEqual(try cluster.put("re20", "after the rebuild").status, 201)
        expected["re20"] = "after the rebuild"
        assertConverged(expected, counting: cluster.volumePorts, replicas: 2)
    }

    // MARK: Scrub

    private func flipByte(in port: Int, key: String, fromEnd offset: Int) throws {
        let name = try XCTUnwrap(cluster.copies(of: key)[port]?.first)
        let path = cluster.volumeDirectory(port) + "/data/" + name.prefix(3) + "/" + name
        var bytes = try XCTUnwrap(FileManager.default.contents(atPath: path))
        bytes[bytes.count - offset] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))
    }

    func testAFlippedByteIsNeverServedAndTheCopyIsRestored() throws {
        try start(volumes: 3, replicas: 2)
        let small = String(repeating: "s", count: 1000)
        let large = String(repeating: "L", count: 300_000) // over the in-memory limit: sent by sendfile
        XCTAssertEqual(try cluster.put("small", small).status, 201)
        XCTAssertEqual(try cluster.put("large", large).status, 201)
        let smallHolder = try XCTUnwrap(cluster.copies(of: "small").keys.sorted().first)
        try flipByte(in: smallHolder, key: "small", fromEnd: 10)
        // Read through the master until each holder has been asked: never the bad byte.
        for _ in 0..<6 { XCTAssertEqual(try cluster.get("small", redirects: 3).text, small) }
        let direct = try HTTP.send("GET", cluster.volumeURL(smallHolder) + "/store/small")
        XCTAssertNotEqual(direct.text, String(small.dropLast(10)) + "r" + String(repeating: "s", count: 9))

        // The large copy is caught by the scrub.
        let largeHolder = try XCTUnwrap(cluster.copies(of: "large").keys.sorted().first)
        try flipByte(in: largeHolder, key: "large", fromEnd: 100_000)
        XCTAssertEqual(try HTTP.send("POST", cluster.volumeURL(largeHolder) + "/admin/scrub").status, 202)
        try waitUntil("the scrub finds it", timeout: 20) {
            let scrub = json(cluster.volumeURL(largeHolder) + "/admin/scrub") ?? [:]
            return scrub["running"] as? Bool == false && (scrub["corrupt"] as? Int ?? 0) >= 1 && (scrub["checked"] as? Int ?? 0) >= 1
        }
        let quarantined = try FileManager.default.contentsOfDirectory(atPath: cluster.volumeDirectory(largeHolder) + "/quarantine")
        XCTAssertFalse(quarantined.isEmpty)
        assertConverged(["small": small, "large": large], counting: cluster.volumePorts, replicas: 2)

        // A flipped byte in the header's copy of the key: the file no longer says whose it
        // is. Read through the master: the reader gets the value from the other copy; the
        // scrub on another key's copy: the master finds the key by the file's version.
        XCTAssertEqual(try cluster.put("header-read", "read me").status, 201)
        XCTAssertEqual(try cluster.put("header-scrub", "scrub me").status, 201)
        let readHolder = try XCTUnwrap(cluster.copies(of: "header-read").keys.sorted().first)
        try flipByte(in: readHolder, key: "header-read", fromEnd: "read me".utf8.count + 2)
        let version = try XCTUnwrap(cluster.copies(of: "header-read")[readHolder]?.first?.split(separator: ".").last)
        let sentBack = try HTTP.send("GET", cluster.volumeURL(readHolder) + "/store/header-read?t=1&ver=\(version)")
        XCTAssertEqual(sentBack.status, 302, sentBack.text)
        XCTAssertEqual(try HTTP.send("GET", try XCTUnwrap(sentBack.headers["Location"])).status, 302, "the master sends it on")
        for _ in 0..<4 { XCTAssertEqual(try cluster.get("header-read", redirects: 3).text, "read me") }
        let scrubHolder = try XCTUnwrap(cluster.copies(of: "header-scrub").keys.sorted().first)
        try flipByte(in: scrubHolder, key: "header-scrub", fromEnd: "scrub me".utf8.count + 2)
        XCTAssertEqual(try HTTP.send("POST", cluster.volumeURL(scrubHolder) + "/admin/scrub").status, 202)
        assertConverged(["small": small, "large": large, "header-read": "read me", "header-scrub": "scrub me"],
                        counting: cluster.volumePorts, replicas: 2)
        let logs = cluster.logText()
        XCTAssertTrue(logs.contains("reports damaged file"), "the scrub reported the file by name")
        XCTAssertTrue(logs.contains("the damaged file v"), "the pass found its key")
    }

    // MARK: Leaks

    func testStaleCopiesNoLongerLeakAndTheScrubCatchesAnyThatDo() throws {
        try start(volumes: 3, replicas: 2, volumeExtra: ["--orphan-grace", "1"])
        // The issue's reproduction: A, kill -9 a placement volume, B, restart it, C.
        XCTAssertEqual(try cluster.put("leak", "A").status, 201)
        let v1 = try XCTUnwrap(cluster.copies(of: "leak").keys.sorted().first)
        cluster.killVolume(v1)
        sleep(4)
        try putEventually("leak", "B")
        try cluster.startVolume(port: v1)
        usleep(1_500_000)
        try putEventually("leak", "C")
        assertConverged(["leak": "C"], counting: cluster.volumePorts, replicas: 2, timeout: 20)

        // A leaked copy planted by hand (an old version the index knows is superseded) and a
        // file of a key the index has never heard of: the scrub removes the first, counts and
        // keeps the second.
        XCTAssertEqual(try cluster.put("planted", "current").status, 201)
        let holder = try XCTUnwrap(cluster.copies(of: "planted").keys.first)
        func plant(_ key: String, version: UInt64, _ value: String) throws -> String {
            let parsed = try Key(key)
            let stem = FileStore.fileStem(parsed)
            let bucket = cluster.volumeDirectory(holder) + "/data/" + stem.prefix(3)
            try FileManager.default.createDirectory(atPath: bucket, withIntermediateDirectories: true)
            let bytes = ValueFileHeader(key: parsed, version: version, checksum: CRC32.checksum(Array(value.utf8)),
                                        size: UInt64(value.utf8.count)).encoded() + Array(value.utf8)
            let path = bucket + "/" + stem + "." + String(version)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            var times = [timespec(tv_sec: time(nil) - 60, tv_nsec: 0), timespec(tv_sec: time(nil) - 60, tv_nsec: 0)]
            utimensat(AT_FDCWD, path, &times, 0)
            return path
        }
        let stale = try plant("planted", version: 1 << 20, "ancient")
        let unknown = try plant("nobody-knows", version: 1 << 20, "orphan")
        XCTAssertEqual(try HTTP.send("POST", cluster.volumeURL(holder) + "/admin/scrub").status, 202)
        try waitUntil("scrub pass done", timeout: 20) {
            let scrub = json(cluster.volumeURL(holder) + "/admin/scrub") ?? [:]
            return scrub["running"] as? Bool == false && scrub["passes"] as? Int ?? 0 >= 1
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale), "a superseded copy goes")
        XCTAssertTrue(FileManager.default.fileExists(atPath: unknown), "an unknown key's file stays")
        XCTAssertEqual(json(cluster.volumeURL(holder) + "/admin/scrub")?["unknown_files"] as? Int, 1)
        try waitUntil("unknown files reported by the master", timeout: 5) {
            let volumes = json(cluster.masterURL + "/admin/volumes")?["volumes"] as? [[String: Any]] ?? []
            return volumes.contains { $0["url"] as? String == cluster.volumeURL(holder) && $0["unknown_files"] as? Int == 1 }
        }
        XCTAssertEqual(try cluster.get("planted", redirects: 3).text, "current")
    }

    // MARK: Readers

    func testASlowReaderGetsTheKeyNeverA404() throws {
        try start(volumes: 2, replicas: 1)
        XCTAssertEqual(try cluster.put("slow", "first").status, 201)
        let redirect = try HTTP.send("GET", cluster.masterURL + "/store/slow")
        let location = try XCTUnwrap(redirect.headers["Location"])
        XCTAssertEqual(try cluster.put("slow", "second").status, 201)
        sleep(3) // past the superseded grace: the first version's file is gone
        let late = try HTTP.send("GET", location)
        XCTAssertEqual(late.status, 200, late.text)
        XCTAssertEqual(late.text, "second")

        // A reader sent to a copy that healing has since moved away is sent back to the master.
        let holder = try XCTUnwrap(cluster.copies(of: "slow").keys.first)
        let before = try XCTUnwrap(try HTTP.send("GET", cluster.masterURL + "/store/slow").headers["Location"])
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/remove-volume", body: Array(cluster.volumeURL(holder).utf8)).status, 202)
        try waitUntil("moved", timeout: 20) { !cluster.copies(of: "slow").keys.contains(holder) || volumeStates().count == 1 }
        try waitUntil("copy gone from the drained holder", timeout: 20) {
            (try? HTTP.send("GET", before))?.status != 200
        }
        let moved = try HTTP.send("GET", before)
        XCTAssertEqual(moved.status, 302, moved.text)
        XCTAssertEqual(try cluster.get("slow", redirects: 3).text, "second")
    }

    // MARK: Races and chaos

    func testClientsRaceRepairDrainAndRebalance() throws {
        try start(volumes: 4, replicas: 2, masterExtra: ["--out-after", "2"])
        let keys = (0..<12).map { "race\($0)" }
        let outcomes = Outcomes()
        for key in keys {
            XCTAssertEqual(try cluster.put(key, "\(key) initial").status, 201)
            outcomes.settle(key, "\(key) initial")
        }
        let stop = Atomic(false)
        let writers = DispatchGroup()
        for writer in 0..<3 {
            writers.enter()
            Thread { [self] in
                defer { writers.leave() }
                var round = 0
                while !stop.load(ordering: .relaxed) {
                    round += 1
                    // Each writer has keys of its own, so "last acknowledged" is well defined.
                    let key = keys[writer + 3 * (round % 4)]
                    if round % 7 == 0 {
                        let status = (try? HTTP.follow("DELETE", cluster.masterURL + "/store/" + key))?.status
                        outcomes.record(key, nil, acknowledged: status == 204, refused: status == 404)
                    } else {
                        let value = "\(key) w\(writer) r\(round)"
                        let status = (try? cluster.put(key, value))?.status
                        outcomes.record(key, value, acknowledged: status == 201, refused: status == 409)
                    }
                    usleep(20_000)
                }
            }.start()
        }
        let ports = cluster.volumePorts
        // Lose one (out), add one (rebalance), drain one, bring the lost one back.
        cluster.killVolume(ports[0])
        sleep(6)
        let added = try cluster.startVolume()
        _ = try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(cluster.volumeURL(added).utf8))
        sleep(2)
        _ = try HTTP.send("POST", cluster.masterURL + "/admin/remove-volume", body: Array(cluster.volumeURL(ports[1]).utf8))
        sleep(2)
        try cluster.startVolume(port: ports[0])
        sleep(3)
        stop.store(true, ordering: .relaxed)
        writers.wait()
        try waitUntil("drained", timeout: 30) { volumeStates()[cluster.volumeURL(ports[1])] == nil }
        _ = try HTTP.send("POST", cluster.masterURL + "/admin/repair")
        let counting = cluster.volumePorts.filter { $0 != ports[1] }
        assertConverged(allowing: outcomes.allowed, counting: counting, replicas: 2, timeout: 60)
    }

    func testSeededChaos() throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["KALAVARA_CHAOS_SEED"] ?? "") ?? UInt64(Date().timeIntervalSince1970)
        print("chaos seed \(seed) (set KALAVARA_CHAOS_SEED to repeat)")
        var random = SplitMix64(seed: seed)
        _ = random.next()
        try start(volumes: 4, replicas: 2, masterExtra: ["--out-after", "2"])
        let outcomes = Outcomes()
        var spare: [Int] = []
        var draining: Set<Int> = []
        for step in 0..<40 {
            let key = "chaos\(random.next() % 10)"
            switch random.next() % 10 {
            case 0 where cluster.volumes.values.filter(\.isRunning).count > 3:
                let victim = cluster.volumePorts.filter { cluster.volumes[$0]!.isRunning && !draining.contains($0) }
                if let port = victim.randomElement(using: &random) { cluster.killVolume(port); spare.append(port) }
            case 1 where !spare.isEmpty:
                try cluster.startVolume(port: spare.removeFirst())
            case 2 where draining.isEmpty && cluster.volumes.count < 6:
                let port = try cluster.startVolume()
                _ = try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(cluster.volumeURL(port).utf8))
            case 3 where draining.isEmpty:
                let running = cluster.volumePorts.filter { cluster.volumes[$0]!.isRunning }
                if running.count > 3, let port = running.randomElement(using: &random) {
                    _ = try HTTP.send("POST", cluster.masterURL + "/admin/remove-volume", body: Array(cluster.volumeURL(port).utf8))
                    draining.insert(port)
                }
            case 4:
                let status = (try? HTTP.follow("DELETE", cluster.masterURL + "/store/" + key))?.status
                outcomes.record(key, nil, acknowledged: status == 204, refused: status == 404)
            default:
                let value = "\(key) step \(step)"
                let status = (try? cluster.put(key, value))?.status
                outcomes.record(key, value, acknowledged: status == 201, refused: status == 409)
            }
            usleep(UInt32(100_000 + random.next() % 400_000))
        }
        for port in spare { try cluster.startVolume(port: port) }
        try waitUntil("drains done (seed \(seed))", timeout: 60) {
            draining.allSatisfy { volumeStates()[cluster.volumeURL($0)] == nil }
        }
        _ = try HTTP.send("POST", cluster.masterURL + "/admin/repair")
        let counting = cluster.volumePorts.filter { !draining.contains($0) }
        // Keys never acknowledged are not expected anywhere; acknowledged ones must read back.
        assertConverged(allowing: outcomes.allowed, counting: counting, replicas: 2, timeout: 60)
        if testRun?.failureCount ?? 0 > 0 { print("chaos failed with seed \(seed)") }
    }
}

/// What each key may read as at the end: its last acknowledged outcome, plus every attempt
/// since whose answer was lost (it may or may not have happened). A refused attempt (a
/// `503` before anything was stored, a `409`) adds nothing; a key never written is absent.
final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var outcomes: [String: [String?]] = [:]

    func settle(_ key: String, _ value: String?) {
        lock.lock()
        outcomes[key] = [value]
        lock.unlock()
    }

    func record(_ key: String, _ value: String?, acknowledged: Bool, refused: Bool) {
        lock.lock()
        defer { lock.unlock() }
        if acknowledged {
            outcomes[key] = [value]
        } else if !refused {
            outcomes[key, default: [nil]].append(value)
        }
    }

    var allowed: [String: [String?]] {
        lock.lock()
        defer { lock.unlock() }
        return outcomes
    }
}
