import Foundation
import KalavaraCore
import KalavaraHTTP
import Synchronization
import XCTest

/// Failure domains against real processes: volumes started with `--zone`, a whole zone
/// killed with kill -9, and a cluster that gains its second zone and spreads itself while
/// clients read.
final class ZoneTests: XCTestCase, @unchecked Sendable {
    var cluster: TestCluster!

    override func tearDown() { cluster?.shutdown() }

    /// Starts one volume per entry of `zones`, then a master with `--replicas`, and waits
    /// until the master knows every volume's zone.
    private func start(zones: [String], replicas: Int) throws -> [Int: String] {
        cluster = try TestCluster()
        var zoneOf: [Int: String] = [:]
        for zone in zones { zoneOf[try cluster.startVolume(extra: ["--zone", zone])] = zone }
        try cluster.startMaster(volumePorts: cluster.volumePorts, extra: ["--replicas", String(replicas)])
        try waitForZones(zoneOf)
        return zoneOf
    }

    private func volumeEntries() -> [[String: Any]] {
        guard let answer = try? HTTP.send("GET", cluster.masterURL + "/admin/volumes"), answer.status == 200 else { return [] }
        let object = (try? JSONSerialization.jsonObject(with: Data(answer.body))) as? [String: Any]
        return object?["volumes"] as? [[String: Any]] ?? []
    }

    /// Waits until `/admin/volumes` shows each volume up, in its zone.
    private func waitForZones(_ zoneOf: [Int: String]) throws {
        try waitUntil("every volume up and in its zone", timeout: 15) {
            let shown = Dictionary(volumeEntries().compactMap { entry -> (String, String)? in
                guard entry["state"] as? String == "up", let url = entry["url"] as? String else { return nil }
                return (url, entry["zone"] as? String ?? "?")
            }, uniquingKeysWith: { first, _ in first })
            return zoneOf.allSatisfy { shown[cluster.volumeURL($0.key)] == $0.value }
        }
    }

    /// The zones holding a copy of `key` (one entry per copy).
    private func copyZones(_ key: String, _ zoneOf: [Int: String]) -> [String] {
        cluster.copies(of: key).keys.map { zoneOf[$0] ?? "?" }
    }

    func testSixVolumesInThreeZonesKeepEveryKeyOnTwoZonesAndSurviveLosingAZone() throws {
        let zoneOf = try start(zones: ["a", "a", "b", "b", "c", "c"], replicas: 2)
        var expected: [String: String] = [:]
        for index in 0..<120 {
            XCTAssertEqual(try cluster.put("zoned/\(index)", "value \(index)").status, 201)
            expected["zoned/\(index)"] = "value \(index)"
        }
        for key in expected.keys {
            let zones = copyZones(key, zoneOf)
            XCTAssertEqual(zones.count, 2, "\(key): \(zones)")
            XCTAssertEqual(Set(zones).count, 2, "\(key) has both copies in zone \(zones[0])")
        }
        let page = try HTTP.send("GET", cluster.masterURL + "/").text
        XCTAssertTrue(page.contains("<td data-label=\"Zone\">b</td>"), page)
        XCTAssertFalse(page.contains("zones-warning"), "three zones are enough for two replicas")
        XCTAssertTrue(try HTTP.send("GET", cluster.masterURL + "/metrics").text.contains("kalavara_volume_zones 3"))
        let listing = try runTool(TestCluster.binDirectory + "/kalavara", ["-m", cluster.masterURL, "volumes"])
        XCTAssertEqual(listing.status, 0, listing.output)
        XCTAssertTrue(listing.output.contains("ZONE"), listing.output)
        XCTAssertEqual(listing.output.split(separator: "\n").filter { $0.contains(" c  ") }.count, 2, listing.output)

        // kill -9 both volumes of zone b: every key still reads, from its other zone.
        let zoneB = zoneOf.filter { $0.value == "b" }.map(\.key)
        zoneB.forEach(cluster.killVolume)
        try waitUntil("zone b is down", timeout: 15) {
            volumeEntries().filter { zoneB.map(cluster.volumeURL).contains($0["url"] as? String ?? "") }
                .allSatisfy { $0["state"] as? String == "down" }
        }
        for (key, value) in expected {
            let answer = try cluster.get(key, redirects: 3)
            XCTAssertEqual(answer.status, 200, key)
            XCTAssertEqual(answer.text, value, key)
        }
        // Writes meanwhile go to the two zones left, one copy each.
        for index in 0..<40 {
            XCTAssertEqual(try cluster.put("during/\(index)", "v\(index)").status, 201)
            XCTAssertEqual(Set(copyZones("during/\(index)", zoneOf)), ["a", "c"], "during/\(index)")
        }

        // A restarted master knows the zones from its index, before the dead volumes answer.
        cluster.killMaster()
        try cluster.restartMaster()
        let zonesAfterRestart = Dictionary(volumeEntries().map { ($0["url"] as? String ?? "", $0["zone"] as? String ?? "") },
                                           uniquingKeysWith: { first, _ in first })
        for port in zoneB { XCTAssertEqual(zonesAfterRestart[cluster.volumeURL(port)], "b") }
    }

    func testAClusterThatGainsASecondZoneSpreadsItselfWhileClientsRead() throws {
        let first = try start(zones: ["a", "a", "a", "a"], replicas: 2)
        var expected: [String: String] = [:]
        for index in 0..<80 {
            XCTAssertEqual(try cluster.put("spread/\(index)", "value \(index)").status, 201)
            expected["spread/\(index)"] = "value \(index)"
        }
        let page = try HTTP.send("GET", cluster.masterURL + "/").text
        XCTAssertTrue(page.contains("zones-warning"), "one zone, two replicas: the page says so")
        try waitUntil("the master's log says so too") { cluster.logText().contains("volumes span 1 zone(s), fewer than --replicas 2") }

        // A reader loop: no client may ever see a wrong or missing value while keys move.
        let failures = Mutex<[String]>([])
        let reads = Atomic(0)
        let stop = Atomic(false), finished = Atomic(false)
        let reader = Thread { [masterURL = cluster.masterURL, expected] in
            defer { finished.store(true, ordering: .relaxed) }
            while !stop.load(ordering: .relaxed) {
                for (key, value) in expected where !stop.load(ordering: .relaxed) {
                    let answer = try? HTTP.follow("GET", masterURL + "/store/" + key, redirects: 3)
                    reads.add(1, ordering: .relaxed)
                    if answer?.status != 200 || answer?.text != value {
                        failures.withLock { $0.append("\(key): \(answer.map { "\($0.status) \($0.text)" } ?? "no answer")") }
                    }
                }
            }
        }
        reader.start()
        defer { stop.store(true, ordering: .relaxed) }

        var zoneOf = first
        for _ in 0..<2 {
            let port = try cluster.startVolume(extra: ["--zone", "b"])
            zoneOf[port] = "b"
            XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(cluster.volumeURL(port).utf8)).status, 200)
        }
        try waitForZones(zoneOf)
        try waitUntil("every key has one copy in each zone", timeout: 60) {
            expected.keys.allSatisfy { key in copyZones(key, zoneOf).sorted() == ["a", "b"] }
        }
        let readsAtEnd = reads.load(ordering: .relaxed)
        try waitUntil("the reader went on a while", timeout: 10) { reads.load(ordering: .relaxed) > readsAtEnd + 80 }
        stop.store(true, ordering: .relaxed)
        try waitUntil("the reader stopped", timeout: 10) { finished.load(ordering: .relaxed) }
        XCTAssertEqual(failures.withLock { $0 }, [], "a reader saw a wrong or missing value")
        XCTAssertGreaterThan(reads.load(ordering: .relaxed), 160)
        let repair = try HTTP.send("GET", cluster.masterURL + "/admin/repair").text
        XCTAssertFalse(repair.contains("\"copied\":0,"), repair)
        XCTAssertTrue(cluster.logText().contains("volumes span 2 zones"), "the log says the warning is over")
        for (key, value) in expected { XCTAssertEqual(try cluster.get(key, redirects: 3).text, value, key) }
    }

    /// A master group knows the volumes' zones on the standby too: after the leader is
    /// killed, the new leader places every key on two zones and shows each volume's zone.
    func testANewLeaderOfAMasterGroupKeepsPlacingByZone() throws {
        let group = try GroupCluster(masters: 2, zones: ["a", "a", "b", "b"])
        defer { group.shutdown() }
        let zoneOf = Dictionary(uniqueKeysWithValues: zip(group.volumePorts, ["a", "a", "b", "b"]))
        try group.start(0, extra: ["--replicas", "2"])
        XCTAssertEqual(try group.waitForLeader(among: [0]), 0)
        try group.waitForVolumes(on: 0)
        try group.start(1, extra: ["--replicas", "2"])
        try group.waitInSync(1, leader: 0)
        for index in 0..<20 { XCTAssertEqual(try group.put("one/\(index)", Array("v\(index)".utf8), via: 0).status, 201) }
        group.kill9(0)
        XCTAssertEqual(try group.waitForLeader(among: [1]), 1)
        try group.waitForVolumes(on: 1)
        let answer = try HTTP.send("GET", group.url(1) + "/admin/volumes")
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])
        let shown = (object["volumes"] as? [[String: Any]] ?? []).compactMap { $0["zone"] as? String }
        XCTAssertEqual(shown.sorted(), ["a", "a", "b", "b"], "the new leader shows each volume's zone")
        for index in 0..<20 { XCTAssertEqual(try group.put("two/\(index)", Array("w\(index)".utf8), via: 1).status, 201) }
        for key in (0..<20).flatMap({ ["one/\($0)", "two/\($0)"] }) {
            XCTAssertEqual(group.cluster.copies(of: key).keys.map { zoneOf[$0] ?? "?" }.sorted(), ["a", "b"], key)
        }
    }
}
