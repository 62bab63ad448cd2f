import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// Registration, add-volume, health, metrics and the answers to wrong requests.
final class AdminTests: XCTestCase {
    func testVolumeRegistersItselfAndMasterRemembersIt() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        let port = try cluster.startVolume(register: true)
        try cluster.startMaster(volumePorts: [])
        try waitUntil("volume registered") {
            (try? HTTP.send("GET", cluster.masterURL + "/admin/volumes").text.contains(cluster.volumeURL(port))) == true
        }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/k", body: [7]).status, 201)

        // Volumes added at run time survive a master restart.
        cluster.killMaster()
        cluster.killVolume(port)
        try cluster.restartMaster()
        XCTAssertTrue(try HTTP.send("GET", cluster.masterURL + "/admin/volumes").text.contains(cluster.volumeURL(port)))
    }

    func testAddVolumeIsIdempotentAndValidates() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let second = try cluster.startVolume()
        for _ in 0..<2 {
            XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/add-volume",
                                         body: Array(cluster.volumeURL(second).utf8)).status, 200)
        }
        let listing = try HTTP.send("GET", cluster.masterURL + "/admin/volumes")
        XCTAssertEqual(listing.headers["Content-Type"], "application/json")
        XCTAssertEqual(listing.text.components(separatedBy: cluster.volumeURL(second)).count - 1, 1, listing.text)
        for bad in ["", "not a url", "ftp://x:1", "http://", "http://host:99999", "http://h:1/path"] {
            XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(bad.utf8)).status, 400, bad)
        }
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/admin/add-volume").status, 405)
        // New keys now land on both volumes.
        for index in 0..<30 { _ = try HTTP.follow("PUT", cluster.masterURL + "/store/n\(index)", body: [1]) }
        XCTAssertFalse(cluster.valueFiles(second).isEmpty)
        // The listing reports each volume's value count and free space from its health checks.
        let first = cluster.volumePorts.first { $0 != second }!
        struct Listing: Decodable {
            struct Volume: Decodable { let url: String; let live: Bool; let keys: Int?; let free_bytes: Int? }
            let volumes: [Volume]
        }
        try waitUntil("counts reported") {
            guard let body = try? HTTP.send("GET", cluster.masterURL + "/admin/volumes").body,
                  let listing = try? JSONDecoder().decode(Listing.self, from: Data(body)) else { return false }
            return [first, second].allSatisfy { port in
                listing.volumes.contains { $0.url == cluster.volumeURL(port) && $0.live && $0.keys == cluster.valueFiles(port).count }
            } && listing.volumes.allSatisfy { $0.free_bytes != nil }
        }
        // Absent figures are null, not missing (the shape a client decodes is fixed).
        XCTAssertTrue(try HTTP.send("GET", cluster.masterURL + "/store/?limit=1000").text.contains("\"next\":null"))
    }

    func testHealthMetricsAndWrongRequests() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let volume = cluster.volumeURL(cluster.volumePorts[0])
        for base in [cluster.masterURL, volume] {
            XCTAssertEqual(try HTTP.send("GET", base + "/health").status, 200)
            let metrics = try HTTP.send("GET", base + "/metrics")
            XCTAssertEqual(metrics.status, 200)
            XCTAssertTrue(metrics.text.contains("kalavara_http_requests_total"), metrics.text)
            XCTAssertEqual(try HTTP.send("GET", base + "/nope").status, 404)
            let wrong = try HTTP.send("POST", base + "/store/k")
            XCTAssertEqual(wrong.status, 405)
            XCTAssertEqual(wrong.headers["Allow"], "GET, HEAD, PUT, DELETE")
        }
        // Commits are checked: a holder named twice, or one the master does not know, is refused.
        let redirect = try HTTP.send("PUT", cluster.masterURL + "/store/checked")
        let version = redirect.headers["Location"]!.components(separatedBy: "ver=")[1].prefix(while: { $0.isNumber })
        let twice = "\(volume),\(volume)".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/internal/commit?op=put&key=checked&ver=\(version)&size=1&h=\(twice)").status, 400)
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/internal/commit?op=put&key=checked&ver=\(version)&size=1&h=http%3A%2F%2Fother%3A1").status, 400)
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/checked").status, 404)
        // A volume only takes writes that come through the master.
        XCTAssertEqual(try HTTP.send("PUT", volume + "/store/direct", body: [1]).status, 400)
        XCTAssertEqual(try HTTP.send("DELETE", volume + "/store/direct").status, 400)
        XCTAssertEqual(try HTTP.send("GET", volume + "/store/direct").status, 404)
    }

    func testMasterAnswers503WhenNoVolumeIsAlive() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/k", body: [1]).status, 201)
        cluster.killVolume(cluster.volumePorts[0])
        try waitUntil("volume marked down") {
            (try? HTTP.send("GET", cluster.masterURL + "/store/k").status) == 503
        }
        XCTAssertEqual(try HTTP.send("PUT", cluster.masterURL + "/store/k2", body: [1]).status, 503)
    }
}
