import Foundation
import KalavaraCore
import XCTest

/// Acknowledged writes survive kill -9 of the daemons.
final class DurabilityTests: XCTestCase {
    func testMasterKilledAndRestartedKeepsEveryAcknowledgedKey() throws {
        let cluster = try TestCluster.started(volumes: 2)
        defer { cluster.shutdown() }
        var acknowledged: [String: String] = [:]
        for index in 0..<60 {
            let key = "durable-\(index)"
            if try HTTP.follow("PUT", cluster.masterURL + "/store/\(key)", body: Array("v\(index)".utf8)).status == 201 {
                acknowledged[key] = "v\(index)"
            }
        }
        XCTAssertEqual(acknowledged.count, 60)
        _ = try HTTP.follow("DELETE", cluster.masterURL + "/store/durable-0")
        acknowledged["durable-0"] = nil

        cluster.killMaster()
        try cluster.restartMaster()
        for (key, value) in acknowledged {
            let answer = try HTTP.follow("GET", cluster.masterURL + "/store/\(key)")
            XCTAssertEqual(answer.status, 200, key)
            XCTAssertEqual(answer.text, value, key)
        }
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/durable-0").status, 404)
        // Writes after the restart get versions above the old ones: overwrites still win.
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/durable-1", body: Array("new".utf8)).status, 201)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/durable-1").text, "new")
    }

    func testVolumeKilledAndRestartedServesItsValues() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        for index in 0..<20 {
            XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/v\(index)", body: Array("value \(index)".utf8)).status, 201)
        }
        let port = cluster.volumePorts[0]
        cluster.killVolume(port)
        try cluster.startVolume(port: port)
        for index in 0..<20 {
            XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/v\(index)").text, "value \(index)")
        }
    }

    func testMasterDownMeansNoCreatedAndNoVisibleValue() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let redirect = try HTTP.send("PUT", cluster.masterURL + "/store/orphan", body: [1])
        XCTAssertEqual(redirect.status, 307)
        cluster.killMaster()
        // The volume cannot commit: the client must not hear 201.
        let answer = try HTTP.send("PUT", redirect.headers["Location"]!, body: [1])
        XCTAssertEqual(answer.status, 503, answer.text)
        // Not even a client that goes straight to the volume sees the uncommitted value.
        let port = HTTPURL(redirect.headers["Location"]!)!.port
        XCTAssertEqual(try HTTP.send("GET", cluster.volumeURL(port) + "/store/orphan").status, 404)
        try cluster.restartMaster()
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/orphan").status, 404)
    }
}
