import Foundation
import KalavaraHTTP
import Synchronization
import TestSupport
import XCTest

/// A master group on a real etcd: failovers by kill -9 and SIGSTOP, stale standbys, a
/// former leader rejoining, etcd restarted; no acknowledged write lost in any of them.
final class MasterGroupTests: XCTestCase {
    private var group: GroupCluster!

    override func tearDown() {
        if let group, (testRun?.failureCount ?? 0) > 0 {
            // The daemons' logs, for the failure's story (the cluster's folder goes with it).
            try? group.cluster.logText().write(toFile: "/tmp/kalavara-\(name.filter { $0.isLetter || $0.isNumber }).log", atomically: true, encoding: .utf8)
        }
        group?.shutdown()
        group = nil
    }

    /// Starts masters 0 and 1, 0 leading and 1 in sync.
    private func startPair() throws {
        group = try GroupCluster(masters: 2)
        try group.start(0)
        XCTAssertEqual(try group.waitForLeader(among: [0]), 0)
        try group.waitForVolumes(on: 0)
        try group.start(1)
        try group.waitInSync(1, leader: 0)
        try group.waitForVolumes(on: 1)
    }

    func testKill9OfTheLeaderUnderWritersLosesNoAcknowledgedWriteAndReadsThroughTheStandbyNeverFail() throws {
        try startPair()
        for n in 0..<20 { XCTAssertEqual(try group.put("before-\(n)", Array("v\(n)".utf8), via: 0).status, 201) }

        // Readers through the standby, the whole time: every read of a key written before
        // must answer its value.
        let readFailures = Mutex<[String]>([])
        let reading = Atomic(true)
        let reader = Thread { [group] in
            while reading.load(ordering: .relaxed) {
                let n = Int.random(in: 0..<20)
                let answer = try? group!.get("before-\(n)", via: 1)
                if answer?.status != 200 || answer?.text != "v\(n)" {
                    readFailures.withLock { $0.append("before-\(n): \(answer.map { "\($0.status) \($0.text)" } ?? "no answer")") }
                }
                usleep(20_000)
            }
        }
        reader.start()
        let writers = Writers(group, clients: 3, prefix: "w")
        sleep(2)
        let killedAt = Date().timeIntervalSince1970
        group.kill9(0)
        XCTAssertEqual(try group.waitForLeader(among: [1]), 1)
        // Writes resume through the survivor.
        try waitUntil("a write acknowledged after the kill", timeout: 20) { writers.writes.contains { $0.at > killedAt } }
        sleep(1)
        writers.stop()
        reading.store(false, ordering: .relaxed)
        usleep(200_000)

        let writes = writers.writes
        let firstAfter = writes.filter { $0.at > killedAt }.map(\.at).min()!
        print("failover: first 201 \(String(format: "%.2f", firstAfter - killedAt)) s after kill -9 of the leader "
              + "(lease \(group.leaseTTL) s); \(writes.count) writes acknowledged")
        XCTAssertLessThan(firstAfter - killedAt, Double(group.leaseTTL) + 3 + 2, "writes acknowledged again within the lease + 3 s (+2 s slack)")
        for write in writes {
            let answer = try group.get(write.key, via: 1)
            XCTAssertEqual(answer.status, 200, "acknowledged \(write.key) lost: \(answer.text)")
            XCTAssertEqual(answer.body, write.value, write.key)
        }
        XCTAssertEqual(readFailures.withLock { $0 }, [], "reads through the in-sync standby failed during the failover")
    }

    func testAStaleStandbyNeitherLeadsNorAnswers404UntilTheLeaderIsBack() throws {
        try startPair()
        XCTAssertEqual(try group.put("early", Array("1".utf8), via: 0).status, 201)
        group.kill9(1)
        // The leader drops the silent standby (recorded in etcd) and goes on.
        XCTAssertEqual(try group.put("missed", Array("2".utf8), via: 0).status, 201)
        group.kill9(0)
        try group.start(1)
        sleep(UInt32(group.leaseTTL + 2))
        XCTAssertNil(group.view(1)?.leader, "the stale standby must not lead")
        let put = try HTTP.send("PUT", group.url(1) + "/store/new", body: Array("3".utf8))
        XCTAssertEqual(put.status, 503, "no leader: writes refused, \(put.text)")
        for key in ["missed", "early"] {
            let answer = try HTTP.send("GET", group.url(1) + "/store/" + key)
            XCTAssertEqual(answer.status, 503, "a standby out of sync must not answer \(key) from its copy: \(answer.status) \(answer.text)")
        }

        try group.start(0)
        XCTAssertEqual(try group.waitForLeader(), 0)
        try group.waitInSync(1, leader: 0)
        for (key, value) in [("early", "1"), ("missed", "2")] {
            for master in [0, 1] {
                let answer = try group.get(key, via: master)
                XCTAssertEqual(answer.status, 200, "\(key) via \(master)")
                XCTAssertEqual(answer.text, value)
            }
        }
    }

    func testAFormerLeaderRejoinsAsStandbyAndASecondFailoverKeepsEverything() throws {
        try startPair()
        var written: [(String, String)] = []
        for n in 0..<30 {
            XCTAssertEqual(try group.put("first-\(n)", Array("a\(n)".utf8), via: 0).status, 201)
            written.append(("first-\(n)", "a\(n)"))
        }
        group.kill9(0)
        XCTAssertEqual(try group.waitForLeader(among: [1]), 1)
        for n in 0..<30 {
            XCTAssertEqual(try group.put("second-\(n)", Array("b\(n)".utf8), via: 1).status, 201)
            written.append(("second-\(n)", "b\(n)"))
        }
        try group.start(0)
        try group.waitInSync(0, leader: 1)
        group.kill9(1)
        XCTAssertEqual(try group.waitForLeader(among: [0]), 0)
        for (key, value) in written {
            let answer = try group.get(key, via: 0)
            XCTAssertEqual(answer.status, 200, key)
            XCTAssertEqual(answer.text, value, key)
        }
        XCTAssertEqual(try group.put("third", Array("c".utf8), via: 0).status, 201)
    }

    func testALeaderStoppedPastItsLeaseAcknowledgesNothingAfterWaking() throws {
        try startPair()
        XCTAssertEqual(try group.put("before", Array("0".utf8), via: 0).status, 201)
        group.signal(0, SIGSTOP)
        XCTAssertEqual(try group.waitForLeader(among: [1]), 1)
        XCTAssertEqual(try group.put("during", Array("1".utf8), via: 1).status, 201)
        // A client that reached the stopped leader: its answer comes only after SIGCONT.
        let late = Mutex<HTTP.Answer?>(nil)
        let client = Thread { [group] in
            let answer = try? HTTP.follow("PUT", group!.url(0) + "/store/late", body: Array("2".utf8), redirects: 2)
            late.withLock { $0 = answer }
        }
        client.start()
        sleep(1)
        group.signal(0, SIGCONT)
        let process = try XCTUnwrap(group.process(0))
        try waitUntil("the woken leader to step down", timeout: 10) { !process.isRunning }
        XCTAssertEqual(process.terminationStatus, 75, "a leader that lost its lease exits so a fresh process rejoins")
        try waitUntil("the late client's answer", timeout: 20) { late.withLock { $0 } != nil || !client.isExecuting }
        if let answer = late.withLock({ $0 }), answer.status == 201 {
            // Whatever it acknowledged must be on the new leader.
            XCTAssertEqual(try group.get("late", via: 1).text, "2")
        }
        for (key, value) in [("before", "0"), ("during", "1")] {
            XCTAssertEqual(try group.get(key, via: 1).text, value, key)
        }
        try group.start(0)
        try group.waitInSync(0, leader: 1)
    }

    func testEtcdRestartedUnderLoadLosesNoAcknowledgedWrite() throws {
        try startPair()
        let writers = Writers(group, clients: 2, prefix: "e")
        sleep(1)
        group.etcd.kill()
        sleep(1)
        try group.etcd.restart()
        let restartedAt = Date().timeIntervalSince1970
        try waitUntil("writes acknowledged after etcd came back", timeout: 20) { writers.writes.contains { $0.at > restartedAt + 0.5 } }
        writers.stop()
        let leader = try group.waitForLeader()
        for write in writers.writes {
            let answer = try group.get(write.key, via: leader)
            XCTAssertEqual(answer.status, 200, "acknowledged \(write.key) lost")
            XCTAssertEqual(answer.body, write.value, write.key)
        }
    }

    /// Clients writing, reading and deleting a few keys through any master, across a kill -9
    /// of the leader: the history they saw is checked to be linearizable.
    func testConcurrentClientsAcrossAFailoverSeeALinearizableHistory() throws {
        try startPair()
        let history = HistoryRecorder()
        // Which master each operation went to and what it answered, for a violation's story.
        let notes = Mutex<[Int: String]>([:])
        let keys = (0..<5).map { "lin-\($0)" }
        let running = Atomic(true)
        let done = DispatchGroup()
        for client in 0..<4 {
            done.enter()
            Thread { [group] in
                defer { done.leave() }
                var n = 0
                while running.load(ordering: .relaxed) {
                    n += 1
                    let key = keys.randomElement()!
                    let via = Int.random(in: 0...1)
                    let master = group!.url(via)
                    let roll = Int.random(in: 0..<10)
                    if roll < 5 {
                        let value = Array("c\(client)-\(n)".utf8)
                        let id = history.invoke(key: key, kind: .write(value))
                        let answer = try? HTTP.follow("PUT", master + "/store/" + key, body: value, redirects: 2)
                        history.complete(id, answer?.status == 201 ? .ok(read: nil) : answer.map { (400..<500).contains($0.status) } == true ? .failed : .unknown)
                        notes.withLock { $0[id] = "via \(via): \(answer.map { "\($0.status) \($0.text.prefix(80))" } ?? "no answer")" }
                    } else if roll < 9 {
                        let id = history.invoke(key: key, kind: .read)
                        let answer = try? HTTP.follow("GET", master + "/store/" + key, redirects: 3)
                        notes.withLock { $0[id] = "via \(via): \(answer.map { "\($0.status) \($0.headers["Location"] ?? "")" } ?? "no answer")" }
                        switch answer?.status {
                        case 200?: history.complete(id, .ok(read: answer!.body))
                        case 404?: history.complete(id, .ok(read: nil))
                        default: history.complete(id, .unknown)
                        }
                    } else {
                        let id = history.invoke(key: key, kind: .delete)
                        let answer = try? HTTP.follow("DELETE", master + "/store/" + key, redirects: 2)
                        notes.withLock { $0[id] = "via \(via): \(answer.map { "\($0.status) \($0.text.prefix(80))" } ?? "no answer")" }
                        history.complete(id, [204, 404].contains(answer?.status ?? 0) ? .ok(read: nil) : .unknown)
                    }
                }
            }.start()
        }
        sleep(2)
        group.kill9(0)
        XCTAssertEqual(try group.waitForLeader(among: [1]), 1)
        sleep(3)
        running.store(false, ordering: .relaxed)
        done.wait()
        let operations = history.operations
        let answered = operations.filter { if case .ok = $0.outcome { return true } else { return false } }
        print("linearizability: \(operations.count) operations, \(answered.count) answered, across a failover")
        XCTAssertGreaterThan(answered.count, 100)
        if case .violation(let violation) = Linearizability.check(operations) {
            let story = notes.withLock { notes in violation.operations.map { "  #\($0.id): \(notes[$0.id] ?? "?")" } }
            XCTFail("\(violation)\n" + story.joined(separator: "\n"))
        }
    }

    /// The S3 gateway (given one master, it learns the group) and the `kalavara` CLI (given
    /// both) reach whichever leads, across a failover; the status page and `kalavara masters`
    /// show the group.
    func testTheGatewayAndTheCLIFollowTheLeaderAndShowTheGroup() throws {
        try startPair()
        let masters = group.url(0) + "," + group.url(1)
        let port = freeLoopbackPort()
        // The gateway is given the leader alone: it learns the standby from the leader's group.
        // Stopped with the cluster (`others`), as the gateways `startGateway` starts.
        group.cluster.others.append(try group.cluster.launch("kalavara-s3", ["-p", String(port), "-m", group.url(0), "--bind", "127.0.0.1"], log: "s3"))
        let s3 = "http://127.0.0.1:\(port)"
        try waitUntil("the gateway", timeout: 10) { (try? HTTP.send("GET", s3 + "/_health"))?.status == 200 }
        XCTAssertEqual(try HTTP.send("PUT", s3 + "/photos").status, 200)
        XCTAssertEqual(try HTTP.send("PUT", s3 + "/photos/a", body: Array("first".utf8)).status, 200)

        let cli = TestCluster.binDirectory + "/kalavara"
        let listing = try runTool(cli, ["-m", masters, "masters"])
        XCTAssertEqual(listing.status, 0, listing.output)
        XCTAssertTrue(listing.output.contains("group kalavara"), listing.output)
        XCTAssertTrue(listing.output.contains(group.url(0) + "  leader"), listing.output)
        XCTAssertTrue(listing.output.contains(group.url(1) + "  standby   yes"), listing.output)
        let status = try runTool(cli, ["-m", group.url(1), "status"])
        XCTAssertTrue(status.output.contains("group kalavara: leader \(group.url(0))"), status.output)
        let page = try HTTP.send("GET", group.url(0) + "/").text
        XCTAssertTrue(page.contains("id=\"masters\"") && page.contains("data-role=\"standby\""), "the status page lists the group")

        group.kill9(0)
        XCTAssertEqual(try group.waitForLeader(among: [1]), 1)
        // The gateway's next call finds the new leader; so does the CLI, given the dead one first.
        XCTAssertEqual(try HTTP.send("PUT", s3 + "/photos/b", body: Array("second".utf8), timeout: 30).status, 200)
        XCTAssertEqual(try HTTP.send("GET", s3 + "/photos/a").text, "first")
        XCTAssertEqual(try HTTP.send("GET", s3 + "/photos/b").text, "second")
        let file = group.cluster.root + "/cli-value"
        try Data("third".utf8).write(to: URL(fileURLWithPath: file))
        let put = try runTool(cli, ["-m", masters, "put", file, "c"])
        XCTAssertEqual(put.status, 0, put.output)
        XCTAssertEqual(try group.get("c", via: 1).text, "third")
        let after = try runTool(cli, ["-m", masters, "masters"])
        XCTAssertTrue(after.output.contains(group.url(1) + "  leader"), after.output)
    }

    /// A signed cluster: the standby's polls and checkpoint copies are signed calls like any other.
    func testASignedGroupReplicatesAndFailsOver() throws {
        let secret = NSTemporaryDirectory() + "kalavara-group-secret-" + UUID().uuidString
        try Data("group-secret-\(UUID().uuidString)".utf8).write(to: URL(fileURLWithPath: secret))
        defer { try? FileManager.default.removeItem(atPath: secret) }
        group = try GroupCluster(masters: 2, volumeExtra: ["--secret-file", secret])
        try group.start(0, extra: ["--secret-file", secret])
        XCTAssertEqual(try group.waitForLeader(among: [0]), 0)
        try group.waitForVolumes(on: 0)
        try group.start(1, extra: ["--secret-file", secret])
        try group.waitInSync(1, leader: 0)
        // An unsigned poll of the log is refused.
        XCTAssertEqual(try HTTP.send("GET", group.url(0) + "/internal/group/log?member=http://127.0.0.1:1&epoch=1&from=1").status, 403)
        for n in 0..<10 { XCTAssertEqual(try group.put("s\(n)", Array("v\(n)".utf8), via: 0).status, 201) }
        group.kill9(0)
        XCTAssertEqual(try group.waitForLeader(among: [1]), 1)
        try group.waitForVolumes(on: 1)
        for n in 0..<10 { XCTAssertEqual(try group.get("s\(n)", via: 1).text, "v\(n)") }
        XCTAssertEqual(try group.put("after", Array("x".utf8), via: 1).status, 201)
    }

    /// Three masters: two failovers in a row, each standby rejoining the new leader's set.
    func testAThreeMasterGroupFailsOverTwiceLosingNothing() throws {
        group = try GroupCluster(masters: 3)
        try group.start(0)
        XCTAssertEqual(try group.waitForLeader(among: [0]), 0)
        try group.waitForVolumes(on: 0)
        try group.start(1)
        try group.start(2)
        try group.waitInSync(1, leader: 0)
        try group.waitInSync(2, leader: 0)
        var written: [(String, String)] = []
        func write(_ prefix: String, via master: Int) throws {
            for n in 0..<20 {
                XCTAssertEqual(try group.put("\(prefix)-\(n)", Array("\(prefix)\(n)".utf8), via: master).status, 201)
                written.append(("\(prefix)-\(n)", "\(prefix)\(n)"))
            }
        }
        try write("one", via: 0)
        group.kill9(0)
        let second = try group.waitForLeader(among: [1, 2])
        let third = 3 - second
        try group.waitInSync(third, leader: second)
        try write("two", via: third)
        group.kill9(second)
        XCTAssertEqual(try group.waitForLeader(among: [third]), third)
        try group.waitForVolumes(on: third)
        try write("three", via: third)
        for (key, value) in written { XCTAssertEqual(try group.get(key, via: third).text, value, key) }
    }

    /// A leader stopped gracefully (SIGTERM) gives its lease back: the standby takes over at
    /// once, not a lease later.
    func testAGracefulStopHandsTheLeadOverAtOnce() throws {
        group = try GroupCluster(masters: 2, leaseTTL: 10)
        try group.start(0)
        XCTAssertEqual(try group.waitForLeader(among: [0]), 0)
        try group.waitForVolumes(on: 0)
        try group.start(1)
        try group.waitInSync(1, leader: 0)
        XCTAssertEqual(try group.put("k", Array("v".utf8), via: 0).status, 201)
        let stopped = Date()
        group.signal(0, SIGTERM)
        XCTAssertEqual(try group.waitForLeader(among: [1], timeout: 8), 1)
        XCTAssertLessThan(Date().timeIntervalSince(stopped), 5, "well inside the 10 s lease")
        let process = try XCTUnwrap(group.process(0))
        try waitUntil("the stopped master to exit", timeout: 15) { !process.isRunning }
        XCTAssertEqual(process.terminationStatus, 0)
        try group.waitForVolumes(on: 1)
        XCTAssertEqual(try group.get("k", via: 1).text, "v")
    }

    func testGroupViewAndStandbyRedirects() throws {
        try startPair()
        let view = try XCTUnwrap(group.view(1))
        XCTAssertEqual(view.leader, group.url(0))
        XCTAssertEqual(Set(view.masters.map(\.url)), [group.url(0), group.url(1)])
        let leaderView = try XCTUnwrap(group.view(0))
        XCTAssertEqual(leaderView.masters.first { $0.url == group.url(1) }?.inSync, true)
        XCTAssertEqual(leaderView.masters.first { $0.url == group.url(0) }?.role, "leader")
        // A standby sends writes and admin changes to the leader, the same target, 307.
        let put = try HTTP.send("PUT", group.url(1) + "/store/k?x=1", body: Array("v".utf8))
        XCTAssertEqual(put.status, 307)
        XCTAssertEqual(put.headers["Location"], group.url(0) + "/store/k?x=1")
        // It answers reads from its own copy.
        XCTAssertEqual(try group.put("k", Array("v".utf8), via: 1).status, 201)
        let read = try HTTP.send("GET", group.url(1) + "/store/k")
        XCTAssertEqual(read.status, 302, "an in-sync standby redirects reads to a volume itself")
    }
}
