import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
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

    /// A small value's file is neither fsynced nor its directory: the journal's synced
    /// copy stands for them until the next checkpoint's syncfs. Here no checkpoint runs,
    /// the volume is killed, and the disk is made to look as a power cut could leave it:
    /// some value files gone, one cut short, and a removed file back. The restarted volume
    /// serves every acknowledged value whole and the deleted key stays deleted.
    func testJournaledValuesSurviveLostFilesAfterKill() throws {
        let cluster = try TestCluster.started(volumes: 1, volumeExtra: ["--checkpoint-every", "3600"])
        defer { cluster.shutdown() }
        let value = { (index: Int) in Array("journaled \(index) ".utf8) + [UInt8](repeating: UInt8(index), count: 3000) }
        for index in 0..<12 {
            XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/j\(index)", body: value(index)).status, 201)
        }
        let port = cluster.volumePorts[0]
        let data = cluster.volumeDirectory(port) + "/data"
        func file(of key: String) throws -> String {
            let stem = FileStore.fileStem(try Key(key))
            let bucket = data + "/" + stem.prefix(3)
            let name = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: bucket).first { $0.hasPrefix(stem + ".") })
            return bucket + "/" + name
        }
        let deletedPath = try file(of: "j11")
        let deletedBytes = try XCTUnwrap(FileManager.default.contents(atPath: deletedPath))
        XCTAssertEqual(try HTTP.follow("DELETE", cluster.masterURL + "/store/j11").status, 204)
        let deadline = Date().addingTimeInterval(5)
        while FileManager.default.fileExists(atPath: deletedPath), Date() < deadline { usleep(20_000) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: deletedPath))
        cluster.killVolume(port)
        for index in 0..<4 { XCTAssertEqual(unlink(try file(of: "j\(index)")), 0) }
        XCTAssertEqual(truncate(try file(of: "j4"), 100), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: deletedPath, contents: deletedBytes))
        try cluster.startVolume(port: port)
        for index in 0..<11 {
            let answer = try HTTP.follow("GET", cluster.masterURL + "/store/j\(index)")
            XCTAssertEqual(answer.status, 200, "j\(index)")
            XCTAssertEqual(answer.body, value(index), "j\(index)")
        }
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/j11").status, 404)
        XCTAssertFalse(FileManager.default.fileExists(atPath: deletedPath), "the journaled removal was made again")
        XCTAssertTrue(cluster.logText().contains("journal replay: 6 of"), cluster.logText())
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
