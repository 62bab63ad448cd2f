import Foundation
import KalavaraCore
import XCTest

/// Faults outsiders found (issue 21): a wall clock that jumps, a full disk, a stopped volume.
final class OutsiderFaultTests: XCTestCase {
    /// libfaketime (Debian's `faketime`): a daemon started under it reads its wall clock's
    /// offset from a file at every call, so a test can jump that clock while it runs. The
    /// monotonic clock stays real (timers, timeouts), as it does when an operator or NTP
    /// steps a real machine's clock.
    private static let libfaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

    private func launchWithFakeClock(_ cluster: TestCluster, offsetFile: String, _ binary: String,
                                     _ arguments: [String], log: String) throws -> Process {
        guard FileManager.default.fileExists(atPath: Self.libfaketime) else {
            throw XCTSkip("needs libfaketime (scripts/install-deps --test)")
        }
        let environment = ["LD_PRELOAD=\(Self.libfaketime)", "FAKETIME_TIMESTAMP_FILE=\(offsetFile)",
                           "FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1"]
        // Through a shell under the same preload: a Swift daemon exec'd straight under
        // libfaketime by a parent without it was seen to get no arguments at all.
        return try cluster.launch("/usr/bin/env", environment + ["/bin/sh", "-c", "exec \"$0\" \"$@\"",
                                                                 TestCluster.binDirectory + "/" + binary] + arguments, log: log)
    }

    /// Issue 21 #13: a PUT ticket issued before a DELETE must not commit after the master's
    /// wall clock jumped forward past the ticket lifetime (the tombstone expired) and back
    /// (the ticket looks young again): the key stays deleted.
    func testWallClockJumpForwardAndBackDoesNotResurrectADeletedKey() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        let offsetFile = cluster.root + "/clock-offset"
        try "+0\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
        let volume = try cluster.startVolume()
        let port = TestCluster.freePort()
        let master = "http://127.0.0.1:\(port)"
        // A 2 s ticket lifetime: tombstones are swept every second and expire after 2 s.
        cluster.others.append(try launchWithFakeClock(cluster, offsetFile: offsetFile, "master",
            ["-p", String(port), "-d", cluster.databasePath, "--bind", "127.0.0.1", "-v", cluster.volumeURL(volume),
             "--ticket-lifetime", "2"], log: "master"))
        try cluster.waitForHealth(master)

        XCTAssertEqual(try HTTP.follow("PUT", master + "/store/lazarus", body: Array("alive".utf8)).status, 201)
        let late = Array("back from the dead".utf8)
        let ticket = try HTTP.send("PUT", master + "/store/lazarus", body: late)
        XCTAssertEqual(ticket.status, 307)
        let location = try XCTUnwrap(ticket.headers["Location"])
        XCTAssertEqual(try HTTP.follow("DELETE", master + "/store/lazarus").status, 204)

        // A day ahead: the tombstone is past the ticket lifetime and the sweep drops it.
        try "+1d\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
        Thread.sleep(forTimeInterval: 3.5)
        // Back to a minute before the ticket was issued: by the wall clock it is young again.
        try "-60\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
        Thread.sleep(forTimeInterval: 0.5)

        let followed = try HTTP.send("PUT", location, body: late)
        XCTAssertNotEqual(followed.status, 201, followed.text)
        XCTAssertEqual(try HTTP.follow("GET", master + "/store/lazarus").status, 404)
        // The cluster still takes new writes under the stepped-back clock.
        XCTAssertEqual(try HTTP.follow("PUT", master + "/store/lazarus", body: Array("reborn".utf8)).status, 201)
        XCTAssertEqual(try HTTP.follow("GET", master + "/store/lazarus").text, "reborn")
    }

    /// Issue 21 #15e: a volume that stops answering (SIGSTOP: its port still accepts) is
    /// marked down within a few seconds, and a client with a short per-attempt timeout that
    /// retries through the master reads the key from the other holder.
    func testAStoppedHolderIsMarkedDownAndReadsGoAroundIt() throws {
        let cluster = try TestCluster.started(volumes: 2, masterExtra: ["--replicas", "2"])
        defer { cluster.shutdown() }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/steady", body: Array("there".utf8)).status, 201)
        XCTAssertEqual(cluster.copies(of: "steady").count, 2)
        let hung = cluster.volumePorts[0]
        kill(cluster.volumes[hung]!.processIdentifier, SIGSTOP)
        defer { kill(cluster.volumes[hung]!.processIdentifier, SIGCONT) }
        let stopped = monotonicSeconds()

        /// One attempt as `curl -L --max-time 1` makes it: through the master, one second in all.
        func attempt() -> Bool {
            guard let redirect = try? HTTP.send("GET", cluster.masterURL + "/store/steady", timeout: 1),
                  let location = redirect.headers["Location"] else { return false }
            return (try? HTTP.send("GET", location, timeout: 1))?.text == "there"
        }
        func isMarkedDown() -> Bool {
            ((try? HTTP.send("GET", cluster.masterURL + "/admin/volumes", timeout: 1).text) ?? "").contains("\"down\"")
        }
        // A client reading again and again for 6 s, as a busy one would.
        var firstSuccess: Double?, markedDown: Double?, failures = 0, successes = 0
        while monotonicSeconds() - stopped < 6 {
            if attempt() {
                successes += 1
                firstSuccess = firstSuccess ?? monotonicSeconds() - stopped
            } else {
                failures += 1
            }
            if markedDown == nil, isMarkedDown() { markedDown = monotonicSeconds() - stopped }
        }
        print("after SIGSTOP of a holder: first success at \(firstSuccess ?? -1) s; in 6 s \(failures) failed "
              + "and \(successes) good attempt(s); marked down at \(markedDown ?? -1) s")
        XCTAssertNotNil(firstSuccess)
        // Reads leave it at its first failed check (every other attempt failed until it was down).
        XCTAssertLessThanOrEqual(failures, 3, "attempts sent to the stopped holder")
        let down = try XCTUnwrap(markedDown, "a stopped volume is marked down within a few seconds")
        XCTAssertLessThan(down, 5, "a stopped volume is marked down within a few seconds")
        // Once it is down, every attempt reaches the live holder at the first try.
        for _ in 0..<6 { XCTAssertTrue(attempt()) }
    }
}
