import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import TestSupport
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
        let port = freeLoopbackPort()
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

    /// Review of issue 21, L2: a holder whose last health check failed (not down yet) is
    /// still offered when the other holder sent the client back with `not=` (it no longer
    /// has the key): it may serve the read, where `503` surely does not.
    func testASuspectHolderIsStillTriedWhenTheOtherSaysNot() throws {
        let cluster = try TestCluster.started(volumes: 2, masterExtra: ["--replicas", "2"])
        defer { cluster.shutdown() }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/either", body: Array("here".utf8)).status, 201)
        let suspect = cluster.volumeURL(cluster.volumePorts[0]), answering = cluster.volumeURL(cluster.volumePorts[1])
        kill(cluster.volumes[cluster.volumePorts[0]]!.processIdentifier, SIGSTOP)
        defer { kill(cluster.volumes[cluster.volumePorts[0]]!.processIdentifier, SIGCONT) }
        func redirect(_ query: String = "") -> String? {
            (try? HTTP.send("GET", cluster.masterURL + "/store/either" + query, timeout: 1))?.headers["Location"]
        }
        // Its first failed check: reads go to the other holder only (they rotate otherwise).
        try waitUntil("reads leave the stopped holder", timeout: 3) {
            (0..<4).allSatisfy { _ in redirect()?.hasPrefix(answering) == true }
        }
        let not = "?not=" + (answering.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? answering)
        XCTAssertEqual(redirect(not).map { $0.hasPrefix(suspect) }, true, "sent back from \(answering)")
    }

    /// Review of issue 21, L3: the health check's deadline is for the whole check, not for
    /// each socket read: a "volume" that answers a byte every 0.3 s (each read well within
    /// 0.8 s, the whole answer 11 s) is marked down in a few seconds.
    func testAVolumeTricklingItsHealthAnswerIsMarkedDown() throws {
        let trickler = try FakeServer(trickle: 0.3)
        defer { trickler.stop() }
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        try cluster.startMaster(volumePorts: [trickler.port])
        try waitUntil("the trickling volume is marked down", timeout: 8) {
            ((try? HTTP.send("GET", cluster.masterURL + "/admin/volumes", timeout: 1).text) ?? "").contains("\"down\"")
        }
    }

    /// Issue 21 #14: a volume whose disk is full to the last block still frees space when
    /// keys are deleted, and after kill -9 it starts on the full disk in read-and-delete
    /// mode: reads served, deletes accepted (and freeing space), PUTs `507`.
    func testAFullVolumeFreesSpaceOnDeleteAndRestartsReadAndDelete() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        let small = cluster.root + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        guard try runTool("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", small]).status == 0 else {
            throw XCTSkip("needs the right to mount a tmpfs")
        }
        defer { _ = try? runTool("umount", ["-l", small]) }
        let port = freeLoopbackPort()
        // Checkpoints far apart: small values written just before the crash stay in the
        // journal, which a start-up must then rewrite on the full disk.
        let arguments = ["-p", String(port), "-d", small + "/volume", "--bind", "127.0.0.1", "--checkpoint-every", "600"]
        func startVolume() throws {
            cluster.volumes[port] = try cluster.launch(TestCluster.binDirectory + "/volume", arguments, log: "volume")
            try cluster.waitForHealth(cluster.volumeURL(port))
        }
        try startVolume()
        try cluster.startMaster(volumePorts: [port])
        func put(_ key: String, _ bytes: Int) throws -> Int {
            let answer = try HTTP.follow("PUT", cluster.masterURL + "/store/" + key, body: [UInt8](repeating: 7, count: bytes))
            if answer.status != 201 { print("PUT \(key): \(answer.status) \(answer.text)") }
            return answer.status
        }
        func free() -> Int { FileStore.freeBytes(at: small) }
        /// Values until the disk refuses one, then a file over every block left (the disk is
        /// shared: logs, another tenant), as an outsider's full disk was.
        func fillUp(_ prefix: String, _ bytes: Int) throws -> [String] {
            var stored: [String] = []
            for index in 0..<200 {
                let status = try put("\(prefix)\(index)", bytes)
                if status == 507 { break }
                XCTAssertEqual(status, 201)
                stored.append("\(prefix)\(index)")
            }
            _ = try runTool("dd", ["if=/dev/zero", "of=\(small)/filler-\(prefix)", "bs=4k"])
            return stored
        }

        let big = try fillUp("big", 256 << 10)
        XCTAssertGreaterThan(big.count, 20)
        let before = free()
        for key in big.prefix(8) {
            XCTAssertEqual(try HTTP.follow("DELETE", cluster.masterURL + "/store/" + key).status, 204)
        }
        try waitUntil("deleted values give their space back", timeout: 10) { free() >= before + 4 * (256 << 10) }
        XCTAssertEqual(try put("after-delete", 64 << 10), 201)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/" + big[8]).body.count, 256 << 10)

        // Full again, small values last (their bytes are in the journal), a crash, and the
        // last blocks taken while the volume is down: the start-up's journal rewrite finds
        // no room at all.
        _ = try fillUp("small", 8 << 10)
        cluster.killVolume(port)
        // The reserve had been given back before the crash and its room taken meanwhile.
        unlink(small + "/volume/uncommitted.journal.reserve")
        _ = try runTool("dd", ["if=/dev/zero", "of=\(small)/filler-down", "bs=4k"])
        try startVolume()
        XCTAssertEqual(try HTTP.send("GET", cluster.volumeURL(port) + "/health").headers[VolumeHeaders.diskFull], "read-and-delete")
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/" + big[9]).body.count, 256 << 10)
        let refused = try HTTP.follow("PUT", cluster.masterURL + "/store/refused", body: [1, 2, 3])
        XCTAssertEqual(refused.status, 507)
        XCTAssertTrue(refused.text.contains("read-and-delete"), refused.text)
        func masterSaysFull() -> Bool {
            ((try? HTTP.send("GET", cluster.masterURL + "/admin/volumes").text) ?? "").contains("\"disk_full\":true")
        }
        try waitUntil("the master shows the volume's disk full", timeout: 10) { masterSaysFull() }
        // Deletes free enough for the reserve and some more: the volume takes writes again by itself.
        for key in big[9..<17] {
            XCTAssertEqual(try HTTP.follow("DELETE", cluster.masterURL + "/store/" + key).status, 204)
        }
        try waitUntil("read-and-delete mode ends once space returns", timeout: 10) {
            (try? HTTP.send("GET", cluster.volumeURL(port) + "/health"))?.headers[VolumeHeaders.diskFull] == nil
        }
        XCTAssertEqual(try put("after-restart", 64 << 10), 201)
        try waitUntil("the master sees the space back", timeout: 10) { !masterSaysFull() }
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/" + big[9]).status, 404)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/" + big[17]).body.count, 256 << 10)
    }

    /// Issue 21 #14, the mechanism: a removal on a disk so full that the journal's last page
    /// has no room releases the reserve and is journaled; with no reserve left, a file the
    /// journal holds no copy of still goes (unrecorded, its directory synced).
    func testJournalRemovalsNeedNoSpaceOnAFullDisk() throws {
        try withJournalOnASmallDisk { root, path, journal in
            /// Removal records of keys that have no file, until the journal ends on a page boundary:
            /// its next record needs a new page.
            func fillLastPage() throws { try padJournal(journal, at: path, leaving: 0) }
            /// A 128 KiB file on a disk then filled up, behind a journal whose last page is full,
            /// removed through the journal; returns whether the removal had to go unrecorded.
            func removeOnFullDisk(_ name: String, version: UInt64, before: () -> Void = {}) throws -> Bool {
                try fillLastPage()
                _ = try runTool("dd", ["if=/dev/zero", "of=\(root)/\(name)", "bs=4k", "count=32"])
                before()
                _ = try runTool("dd", ["if=/dev/zero", "of=\(root)/filler-\(name)", "bs=4k"])
                XCTAssertEqual(FileStore.freeBytes(at: root), 0)
                return try journal.removing([.init(key: try Key(name), version: version)]) { durably in
                    XCTAssertEqual(unlink(root + "/" + name), 0)
                    return durably
                }
            }

            XCTAssertFalse(try removeOnFullDisk("first", version: 5), "the reserve made room for the record")
            let unrecorded = try removeOnFullDisk("second", version: 6) {
                unlink(path + ".reserve") // lost, and its room taken
            }
            XCTAssertTrue(unrecorded, "no room for a record: the file goes anyway, its directory synced")
            XCTAssertGreaterThanOrEqual(FileStore.freeBytes(at: root), 100 << 10)
        }
    }

    /// Review of issue 21, M4: a batch removal whose later record finds no room at all
    /// (no reserve left) still takes the files away, but only once the records that did fit
    /// are durable, and never when a file still without a record is one the journal holds a
    /// copy of: after a power loss, a `+value` line whose removal record was lost would bring
    /// that file back at start-up.
    func testABatchRemovalOnAFullDiskMakesItsRecordsDurableFirst() throws {
        try withJournalOnASmallDisk { root, path, journal in
            try journal.startCheckpoints(syncing: root, every: 600) // logged values allowed, no checkpoint meanwhile
            /// The disk full to the last block, the reserve gone (the checkpoint thread may take
            /// it again while there is room).
            func fillDisk(_ name: String) throws {
                while FileStore.freeBytes(at: root) > 0 || FileManager.default.fileExists(atPath: path + ".reserve") {
                    unlink(path + ".reserve")
                    _ = try runTool("dd", ["if=/dev/zero", "of=\(root)/\(name)", "bs=4k", "oflag=append", "conv=notrunc"])
                }
            }
            // The journal holds the copy of "kept" (a logged value); "plain" has a file only.
            let kept = try Key("kept"), plain = try Key("plain")
            let value = Array("small value".utf8)
            let position = try XCTUnwrap(try journal.appendLogged(kept, version: 7, value: value, crc: CRC32.checksum(value)))
            journal.applied(position)
            XCTAssertTrue(journal.holdsValue(kept, version: 7))
            // Room for kept's removal record only; then the disk is full and the reserve gone.
            let keptRecord = "x 7 \(Hex.encode(kept.bytes))\n".utf8.count
            try padJournal(journal, at: path, leaving: keptRecord)
            try fillDisk("filler")

            // kept's record fits, plain's does not: both go, kept's record durable first.
            var durableWhenRemoved: Bool?
            let durably = try journal.removing([.init(key: kept, version: 7), .init(key: plain, version: 8)]) { durably in
                durableWhenRemoved = journal.isDurable
                return durably
            }
            XCTAssertTrue(durably, "the unrecorded removal syncs its directory itself")
            XCTAssertEqual(durableWhenRemoved, true, "kept's removal record is durable before its file goes")
            XCTAssertFalse(journal.holdsValue(kept, version: 7))

            // The other way round: the copy's record is the one that does not fit, so nothing goes.
            let other = try Key("other")
            unlink(root + "/filler")
            let second = try XCTUnwrap(try journal.appendLogged(other, version: 9, value: value, crc: CRC32.checksum(value)))
            journal.applied(second)
            let plainRecord = "x 10 \(Hex.encode(plain.bytes))\n".utf8.count
            try padJournal(journal, at: path, leaving: plainRecord)
            try fillDisk("filler")
            var ran = false
            XCTAssertThrowsError(try journal.removing([.init(key: plain, version: 10), .init(key: other, version: 9)]) { _ in ran = true })
            XCTAssertFalse(ran, "a file the journal holds a copy of does not go unrecorded")
        }
    }

    /// Review of issue 21, M3: a volume in read-and-delete mode gets no new placements while
    /// another has room (every key hashed onto it was a `507`), the reconciler does not
    /// fight that with copies that fail, and once the disk has room again the keys move to
    /// their placement.
    func testWritesGoAroundAVolumeWhoseDiskIsFull() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        let fullPort = freeLoopbackPort()
        let small = cluster.volumeDirectory(fullPort)
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        guard try runTool("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", small]).status == 0 else {
            throw XCTSkip("needs the right to mount a tmpfs")
        }
        defer { _ = try? runTool("umount", ["-l", small]) }
        // Started once to lay out its directory, then on a disk full to the last block with
        // its reserve gone: it starts in read-and-delete mode.
        try cluster.startVolume(port: fullPort)
        cluster.killVolume(fullPort)
        unlink(small + "/uncommitted.journal.reserve")
        _ = try runTool("dd", ["if=/dev/zero", "of=\(small)/filler", "bs=4k"])
        try cluster.startVolume(port: fullPort)
        XCTAssertEqual(try HTTP.send("GET", cluster.volumeURL(fullPort) + "/health").headers[VolumeHeaders.diskFull], "read-and-delete")
        let roomyPort = try cluster.startVolume()
        try cluster.startMaster(volumePorts: [fullPort, roomyPort], extra: ["--replicas", "1"])
        func repair() -> [String: Any] {
            guard let answer = try? HTTP.send("GET", cluster.masterURL + "/admin/repair"), answer.status == 200 else { return [:] }
            return ((try? JSONSerialization.jsonObject(with: Data(answer.body))) as? [String: Any]) ?? [:]
        }
        try waitUntil("the master shows the volume's disk full", timeout: 10) {
            ((try? HTTP.send("GET", cluster.masterURL + "/admin/volumes").text) ?? "").contains("\"disk_full\":true")
        }

        let keys = (0..<40).map { "around-\($0)" }
        for key in keys {
            let answer = try HTTP.follow("PUT", cluster.masterURL + "/store/" + key, body: Array(key.utf8))
            XCTAssertEqual(answer.status, 201, "\(key): \(answer.text)")
        }
        XCTAssertTrue(keys.allSatisfy { cluster.copies(of: $0).keys.sorted() == [roomyPort] })
        // Half of them belong on the full volume: a pass finds them misplaced and leaves them.
        let passes = repair()["passes"] as? Int ?? 0
        _ = try HTTP.send("POST", cluster.masterURL + "/admin/repair")
        try waitUntil("a repair pass", timeout: 20) { (repair()["passes"] as? Int ?? 0) > passes }
        XCTAssertGreaterThan(repair()["misplaced"] as? Int ?? 0, 0)
        XCTAssertEqual(repair()["errors"] as? Int, 0, "no copies tried to the full volume")

        // Room again: the volume leaves read-and-delete mode, and its keys go to it.
        unlink(small + "/filler")
        try waitUntil("the keys move to their placement", timeout: 30) {
            keys.contains { cluster.copies(of: $0).keys.contains(fullPort) }
                && keys.allSatisfy { cluster.copies(of: $0).count == 1 }
        }
        for key in keys { XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/" + key).text, key) }
    }

    /// Runs `body` with a journal (64 KiB reserve) on a 1 MiB tmpfs of its own.
    private func withJournalOnASmallDisk(_ body: (_ root: String, _ path: String, _ journal: UncommittedJournal) throws -> Void) throws {
        let root = NSTemporaryDirectory() + "/kalavara-reserve-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        guard try runTool("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", root]).status == 0 else {
            throw XCTSkip("needs the right to mount a tmpfs")
        }
        defer { _ = try? runTool("umount", ["-l", root]) }
        let path = root + "/uncommitted.journal"
        let journal = try UncommittedJournal(path: path, reserveBytes: 64 << 10)
        defer { journal.close() }
        try body(root, path, journal)
    }

    /// Removal records of keys that have no file, until exactly `room` bytes are left on the
    /// journal's last page (none: its next record needs a new page).
    private func padJournal(_ journal: UncommittedJournal, at path: String, leaving room: Int) throws {
        func size() -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
        while (4096 - size() % 4096) % 4096 != room {
            let gap = (8192 - size() % 4096 - room) % 4096
            let want = gap < 7 ? gap + 4096 : gap // a record is 7 bytes at least
            // "x 1 HEX\n" or "x 12 HEX\n": 5 or 6 bytes and two per key byte, 2006 at most.
            let length = want <= 2006 ? want : min(2006, want - 7)
            let version: UInt64 = length % 2 == 1 ? 1 : 12
            let keyBytes = (length - (length % 2 == 1 ? 5 : 6)) / 2
            try journal.removing([.init(key: try Key([UInt8](repeating: 0x61, count: keyBytes)), version: version)]) { _ in }
        }
    }
}
