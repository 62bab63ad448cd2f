import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// Replicas, the commit protocol and liveness, with real processes and real kills.
final class ReplicationTests: XCTestCase, @unchecked Sendable {
    var cluster: TestCluster!

    override func setUpWithError() throws {
        cluster = try TestCluster.started(volumes: 3, masterExtra: ["--replicas", "2"], volumeExtra: ["--orphan-grace", "1"])
    }

    override func tearDown() { cluster?.shutdown() }

    /// Retries a write until the master has noticed a dead volume (it may fail until then).
    private func putEventually(_ key: String, _ value: String) throws {
        try waitUntil("PUT \(key) succeeds", timeout: 15) { (try? cluster.put(key, value).status) == 201 }
    }

    func testEveryCreatedValueIsAFileOnExactlyTwoVolumes() throws {
        for index in 0..<30 { XCTAssertEqual(try cluster.put("r\(index)", "value \(index)").status, 201) }
        for index in 0..<30 {
            let copies = cluster.copies(of: "r\(index)")
            XCTAssertEqual(copies.count, 2, "r\(index): \(copies)")
            XCTAssertTrue(copies.values.allSatisfy { $0.count == 1 }, "r\(index): \(copies)")
            XCTAssertEqual(Set(cluster.copyContents(of: "r\(index)")).count, 1, "copies differ")
        }
    }

    func testReadsRotateAmongHoldersSoARetryAvoidsAHungOne() throws {
        XCTAssertEqual(try cluster.put("spread", "both").status, 201)
        var seen: Set<String> = []
        for _ in 0..<10 {
            let location = try XCTUnwrap(try HTTP.send("GET", cluster.masterURL + "/store/spread").headers["Location"])
            seen.insert(try XCTUnwrap(HTTPURL(location)).authority)
        }
        XCTAssertEqual(seen.count, 2, "\(seen)")
        // One holder hangs (SIGSTOP) before the master notices: a client with a short
        // timeout that retries reaches the other copy.
        let hung = try XCTUnwrap(cluster.copies(of: "spread").keys.sorted().first)
        kill(cluster.volumes[hung]!.processIdentifier, SIGSTOP)
        defer { kill(cluster.volumes[hung]!.processIdentifier, SIGCONT) }
        var served = 0
        for _ in 0..<4 {
            guard let location = try? HTTP.send("GET", cluster.masterURL + "/store/spread").headers["Location"] else { continue }
            if let answer = try? HTTP.send("GET", location, timeout: 1), answer.text == "both" { served += 1 }
        }
        XCTAssertGreaterThanOrEqual(served, 2, "retries reached the copy that answers")
    }

    func testReadsSurviveKillOfAHolder() throws {
        for index in 0..<20 { XCTAssertEqual(try cluster.put("k\(index)", "v\(index)").status, 201) }
        let victim = cluster.copies(of: "k0").keys.sorted()[0]
        cluster.killVolume(victim)
        try waitUntil("reads served by the surviving holders", timeout: 10) {
            (0..<20).allSatisfy { (try? self.cluster.get("k\($0)").text) == "v\($0)" }
        }
    }

    func testOverwriteAndDeleteWithAHolderDownNeverServeStaleValues() throws {
        XCTAssertEqual(try cluster.put("over", "old").status, 201)
        XCTAssertEqual(try cluster.put("gone", "doomed").status, 201)
        let victim = cluster.copies(of: "over").keys.sorted()[0]
        cluster.killVolume(victim)

        try putEventually("over", "new")
        XCTAssertEqual(try cluster.get("over").text, "new")
        try waitUntil("DELETE succeeds", timeout: 15) {
            (try? HTTP.follow("DELETE", self.cluster.masterURL + "/store/gone").status) == 204
        }
        XCTAssertEqual(try cluster.get("gone").status, 404)

        try cluster.startVolume(port: victim)
        // The old copies on the returning volume are never served, and then disappear.
        try waitUntil("stale copies removed from the returning volume", timeout: 15) {
            XCTAssertEqual(try? self.cluster.get("over").text, "new")
            XCTAssertEqual(try? self.cluster.get("gone").status, 404)
            let over = self.cluster.copies(of: "over"), gone = self.cluster.copies(of: "gone")
            return over.count == 2 && over.values.allSatisfy { $0.count == 1 } && gone.isEmpty
        }
        XCTAssertEqual(Set(cluster.copyContents(of: "over")).count, 1)
    }

    func testOldCopyGoesEvenIfItsVolumeDiesRightAfterTheOverwrite() throws {
        XCTAssertEqual(try cluster.put("phoenix", "old").status, 201)
        let holders = cluster.copies(of: "phoenix").keys.sorted()
        XCTAssertEqual(try cluster.put("phoenix", "new").status, 201)
        // Killed before its delayed cleanup (2 s): the master's removal queue still has it.
        cluster.killVolume(holders[0])
        usleep(3_000_000)
        try cluster.startVolume(port: holders[0])
        try waitUntil("the old copy removed after the restart", timeout: 20) {
            let copies = self.cluster.copies(of: "phoenix")
            return copies.count == 2 && copies.values.allSatisfy { $0.count == 1 }
        }
        XCTAssertEqual(try cluster.get("phoenix").text, "new")
    }

    func testFewerLiveVolumesThanReplicasIs503() throws {
        XCTAssertEqual(try cluster.put("a", "1").status, 201)
        for port in cluster.volumePorts.prefix(2) { cluster.killVolume(port) }
        try waitUntil("master refuses writes", timeout: 15) {
            let answer = try? HTTP.send("PUT", self.cluster.masterURL + "/store/b", body: [1])
            return answer?.status == 503 && answer?.text.contains("live volume") == true
        }
    }

    func testMasterKilledBetweenRedirectAndWriteLeavesNoValue() throws {
        let redirect = try HTTP.send("PUT", cluster.masterURL + "/store/limbo", body: Array("limbo".utf8))
        XCTAssertEqual(redirect.status, 307)
        cluster.killMaster()
        let answer = try HTTP.send("PUT", redirect.headers["Location"]!, body: Array("limbo".utf8))
        XCTAssertNotEqual(answer.status, 201)
        XCTAssertEqual(cluster.copies(of: "limbo").count, 2, "both replicas hold the uncommitted copy")
        try cluster.restartMaster()
        XCTAssertEqual(try cluster.get("limbo").status, 404)
        // After the grace period the volumes ask the master, learn it is an orphan, remove it.
        try waitUntil("orphan copies removed", timeout: 15) { self.cluster.copies(of: "limbo").isEmpty }
        // And a late commit of that version would be refused: the key is still free to write.
        XCTAssertEqual(try cluster.put("limbo", "fresh").status, 201)
        XCTAssertEqual(try cluster.get("limbo").text, "fresh")
    }

    func testConcurrentOverwritesConvergeOnIdenticalCopies() throws {
        let statuses = ThreadSafe<[Int]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { writer in
            let status = (try? self.cluster.put("contended", "writer \(writer) " + String(repeating: "x", count: writer * 100)).status) ?? 0
            statuses.update { $0.append(status) }
        }
        XCTAssertTrue(statuses.value.contains(201))
        XCTAssertTrue(statuses.value.allSatisfy { $0 == 201 || $0 == 409 }, "\(statuses.value)")
        let answer = try cluster.get("contended")
        XCTAssertEqual(answer.status, 200)
        try waitUntil("losing versions cleaned up", timeout: 10) {
            let copies = self.cluster.copies(of: "contended")
            return copies.count == 2 && copies.values.allSatisfy { $0.count == 1 }
        }
        let contents = cluster.copyContents(of: "contended")
        XCTAssertEqual(Set(contents).count, 1, "replicas diverged")
        XCTAssertTrue(contents[0].suffix(answer.body.count) == Data(answer.body))
    }

    func testKillVolumeAndMasterAmidFiftyConcurrentWriters() throws {
        let acknowledged = ThreadSafe<[String: String]>([:])
        let victim = cluster.volumePorts[0]
        let writers = DispatchGroup()
        for writer in 0..<50 {
            DispatchQueue.global().async(group: writers) {
                for round in 0..<12 {
                    let key = "w\(writer)-\(round)", value = "value \(writer) \(round)"
                    if (try? self.cluster.put(key, value).status) == 201 { acknowledged.update { $0[key] = value } }
                    usleep(20_000)
                }
            }
        }
        usleep(300_000)
        cluster.killVolume(victim)
        usleep(300_000)
        cluster.killMaster()
        usleep(200_000)
        try cluster.restartMaster()
        XCTAssertEqual(writers.wait(timeout: .now() + 60), .success)
        XCTAssertGreaterThan(acknowledged.value.count, 50)
        for (key, value) in acknowledged.value {
            let answer = try cluster.get(key)
            XCTAssertEqual(answer.status, 200, key)
            XCTAssertEqual(answer.text, value, key)
        }
    }
}

/// A value shared between test threads.
final class ThreadSafe<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.lock(); defer { lock.unlock() }; return stored }
    func update(_ change: (inout Value) -> Void) { lock.lock(); change(&stored); lock.unlock() }
}
