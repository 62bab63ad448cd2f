import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

/// Failure domains: the zone-aware placement function, measured over many keys, and the
/// reconciler's view of it (misplaced copies, substitutes, zones kept in the index).
final class ZonePlacementTests: XCTestCase {
    /// Where the registry tests keep their indexes, removed after each test.
    private let directory = NSTemporaryDirectory() + "kalavara-zones-" + UUID().uuidString

    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    /// Six volumes on three hosts, two per host.
    let hosts: [(url: String, zone: String)] = (0..<6).map { ("http://10.0.\($0 / 2).\($0):7000", "host\($0 / 2)") }
    let keys = (0..<5000).map { try! Key("user/\($0)") }

    private func zones(of urls: [String], in volumes: [(url: String, zone: String)]) -> [String] {
        urls.map { url in volumes.first { $0.url == url }!.zone }
    }

    func testTwoCopiesGoToTwoZonesWhereThePlainOrderOftenSharedOne() {
        var sharedBefore = 0
        var perZone: [String: Int] = [:]
        for key in keys {
            let plain = Array(Placement.order(hosts.map(\.url), for: key).prefix(2))
            if Set(zones(of: plain, in: hosts)).count == 1 { sharedBefore += 1 }
            let placed = Placement.placement(hosts, replicas: 2, for: key)
            let placedZones = zones(of: placed, in: hosts)
            XCTAssertEqual(Set(placedZones).count, 2, "\(key): \(placed)")
            placedZones.forEach { perZone[$0, default: 0] += 1 }
            // Each copy is its zone's first volume in the key's rendezvous order.
            let order = Placement.order(hosts.map(\.url), for: key)
            for (url, zone) in zip(placed, placedZones) {
                XCTAssertEqual(order.first { zones(of: [$0], in: hosts)[0] == zone }, url)
            }
        }
        // One pair in five shares a host by chance (a test cluster had 26 keys of 120 so).
        XCTAssertEqual(Double(sharedBefore) / Double(keys.count), 0.2, accuracy: 0.03)
        // Copies spread evenly: each zone holds about two thirds of the keys.
        for (zone, count) in perZone { XCTAssertEqual(Double(count), Double(keys.count) * 2 / 3, accuracy: 200, zone) }
    }

    func testWithFewerZonesThanReplicasEveryZoneHoldsACopyAndTheRestSpread() {
        // Zone a has three volumes, zone b two; three copies.
        let volumes: [(url: String, zone: String)] = (0..<5).map { ("http://10.1.0.\($0):7000", $0 < 3 ? "a" : "b") }
        var twoInB = 0
        for key in keys {
            let placed = Placement.placement(volumes, replicas: 3, for: key)
            XCTAssertEqual(Set(placed).count, 3)
            let placedZones = zones(of: placed, in: volumes)
            XCTAssertEqual(Set(placedZones), ["a", "b"], "\(key): every zone holds a copy")
            if placedZones.filter({ $0 == "b" }).count == 2 { twoInB += 1 }
        }
        // The third copy follows the rendezvous order within the zones: zone b (two of the
        // four volumes left after each zone's first) takes it for about a third of the keys,
        // as the second-best volume of zone b outranks the one of zone a.
        XCTAssertGreaterThan(twoInB, keys.count / 5)
        XCTAssertLessThan(twoInB, keys.count * 4 / 5)
    }

    func testOneZoneIsThePlainRendezvousOrder() {
        let volumes: [(url: String, zone: String)] = (0..<5).map { ("http://10.2.0.\($0):7000", Placement.defaultZone) }
        for key in keys.prefix(500) {
            XCTAssertEqual(Placement.placement(volumes, replicas: 3, for: key),
                           Array(Placement.order(volumes.map(\.url), for: key).prefix(3)))
        }
    }

    /// Keys whose placement changes when `after` replaces `before`: each must have exactly
    /// one copy moved, onto `added` or off `removed`.
    private func moves(from before: [(url: String, zone: String)], to after: [(url: String, zone: String)],
                       replicas: Int, added: String? = nil, removed: String? = nil) -> Int {
        var moved = 0
        for key in keys {
            let old = Set(Placement.placement(before, replicas: replicas, for: key))
            let new = Set(Placement.placement(after, replicas: replicas, for: key))
            guard old != new else { continue }
            moved += 1
            XCTAssertEqual(old.subtracting(new).count, 1, "\(key): one copy moves")
            if let added { XCTAssertEqual(new.subtracting(old), [added], "\(key) moved, but not onto the new volume") }
            if let removed { XCTAssertEqual(old.subtracting(new), [removed], "\(key) moved, but not off the removed volume") }
        }
        return moved
    }

    func testAddingAVolumeMovesOnlyTheCopiesItTakes() {
        let sameZone = ("http://10.0.1.9:7000", "host1")
        // Only keys whose new placement holds the new volume move, one copy each; those are
        // the keys it must take. Over all orders of seven volumes, it is host1's first with
        // at most one other zone's best before it for 9 in 35 keys.
        let movedWithin = moves(from: hosts, to: hosts + [sameZone], replicas: 2, added: sameZone.0)
        XCTAssertEqual(Double(movedWithin) / Double(keys.count), 9.0 / 35, accuracy: 0.03)
        // A fourth zone, one volume, with at most one zone's best before it: 11 in 35 keys.
        let newZone = ("http://10.0.3.9:7000", "host3")
        let movedToZone = moves(from: hosts, to: hosts + [newZone], replicas: 2, added: newZone.0)
        XCTAssertEqual(Double(movedToZone) / Double(keys.count), 11.0 / 35, accuracy: 0.03)
    }

    func testRemovingAVolumeMovesOnlyTheCopiesItHeld() {
        let gone = hosts[3]
        let moved = moves(from: hosts, to: hosts.filter { $0.url != gone.url }, replicas: 2, removed: gone.url)
        let held = keys.filter { Placement.placement(hosts, replicas: 2, for: $0).contains(gone.url) }.count
        XCTAssertEqual(moved, held)
    }

    // MARK: The reconciler's view

    /// A registry of `zones.count` volumes with those zones as their health answers said,
    /// `down` ones failing their checks.
    private func registry(zones: [String], down: Set<Int> = []) throws -> (VolumeRegistry, Index) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let index = try Index(path: directory + "/db-\(UUID().uuidString)")
        let urls = zones.indices.map { "http://127.0.0.1:\(7100 + $0)" }
        let registry = try VolumeRegistry(index: index, seeds: urls, outAfter: 600)
        for (id, zone) in zones.enumerated() {
            var report = HealthReport()
            report.zone = zone
            _ = registry.recordCheck(id: UInt16(id), succeeded: true, report: report)
            if down.contains(id) {
                for _ in 0..<VolumeRegistry.failuresBeforeDown { _ = registry.recordCheck(id: UInt16(id), succeeded: false) }
            }
        }
        return (registry, index)
    }

    func testCopiesSharingAZoneWhileAnotherCouldTakeOneAreMisplacedAndMove() throws {
        // Four volumes in zone a held every key; then zone b's two volumes came.
        let (registry, index) = try registry(zones: ["a", "a", "a", "a", "b", "b"])
        defer { index.close() }
        let view = PlacementView(registry: registry, replicas: 2)
        XCTAssertEqual(view.zoneCount, 2)
        for key in keys.prefix(300) {
            let inZoneA = view.order(key).filter { view.zone($0) == "a" }
            let record = IndexRecord(version: 5, size: 1, holders: Array(inZoneA.prefix(2)))
            XCTAssertEqual(view.assess(key, record), .misplaced, "\(key)")
            let plan = view.plan(key, record)
            XCTAssertEqual(plan.targets.map(view.zone), ["b"])
            XCTAssertEqual(Set(plan.keep.map(view.zone)), ["a", "b"])
            XCTAssertEqual(Set(plan.keep), Set(view.order(key).prefix(2)), "kept: the placement")
            XCTAssertEqual(plan.drop.count, 1)
        }
    }

    func testSubstitutesForADownZoneKeepTheZonesDistinct() throws {
        // Zone b (volumes 2 and 3) is down; zones a and c remain.
        let (registry, index) = try registry(zones: ["a", "a", "b", "b", "c", "c"], down: [2, 3])
        defer { index.close() }
        let view = PlacementView(registry: registry, replicas: 2)
        var checked = 0
        for key in keys.prefix(500) {
            let placement = Array(view.order(key).prefix(2))
            guard let up = placement.first(where: { view.zone($0) != "b" }), placement.contains(where: { view.zone($0) == "b" }) else {
                continue
            }
            checked += 1
            let plan = view.plan(key, IndexRecord(version: 5, size: 1, holders: [up]))
            let third = Set(["a", "b", "c"]).subtracting([view.zone(up), "b"])
            XCTAssertEqual(plan.targets.map(view.zone), Array(third), "\(key): the substitute is in the third zone")
        }
        XCTAssertGreaterThan(checked, 100)
        // A write made meanwhile goes to the two live zones.
        let live = registry.writable.roomy
        XCTAssertEqual(live.count, 4)
        for key in keys.prefix(500) {
            XCTAssertEqual(Set(zones(of: Placement.placement(live, replicas: 2, for: key), in: live)).count, 2)
        }
    }

    func testZonesAreKeptInTheIndexForARestartedMaster() throws {
        let (registry, index) = try registry(zones: ["rack1", "rack2", Placement.defaultZone])
        defer { index.close() }
        XCTAssertEqual(registry.all.map(\.isZoneUnstored), [true, true, false])
        XCTAssertEqual(try registry.storeZones().map(\.url), ["http://127.0.0.1:7100", "http://127.0.0.1:7101"])
        XCTAssertEqual(try registry.storeZones().count, 0, "nothing left to store")
        XCTAssertEqual(registry.settledZoneCount, 3)
        let restarted = try VolumeRegistry(index: index, seeds: [], outAfter: 600)
        XCTAssertEqual(restarted.all.map(\.zone), ["rack1", "rack2", Placement.defaultZone])
        XCTAssertNil(restarted.settledZoneCount, "no volume has answered the restarted master yet")
        // A volume that moved to another zone: its next answer says so, and the index follows.
        var report = HealthReport()
        report.zone = "rack3"
        _ = restarted.recordCheck(id: 0, succeeded: true, report: report)
        XCTAssertEqual(try restarted.storeZones().map(\.zone), ["rack3"])
        try registry.reload()
        XCTAssertEqual(registry.all.map(\.zone), ["rack3", "rack2", Placement.defaultZone])
    }

    func testZoneNamesAreCheckedWhereTheyEnter() {
        for good in ["default", "rack-1", "eu-west-1a", "room_2.rack:3", String(repeating: "z", count: 64)] {
            XCTAssertTrue(Placement.isValidZone(good), good)
        }
        for bad in ["", "two words", "line\nbreak", "ü", String(repeating: "z", count: 65)] {
            XCTAssertFalse(Placement.isValidZone(bad), bad)
        }
        var headers = HTTPHeaders()
        headers.add(VolumeHeaders.zone, "bad zone")
        XCTAssertNil(HealthReport(headers).zone)
        headers.set(VolumeHeaders.zone, "rack7")
        XCTAssertEqual(HealthReport(headers).zone, "rack7")
    }
}
