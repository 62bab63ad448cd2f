import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import TestSupport
import XCTest

/// How the executables behave as programs: flags, errors, signals.
final class DaemonTests: XCTestCase {
    private func runBinary(_ name: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try runTool(TestCluster.binDirectory + "/" + name, arguments)
    }

    func testHelpAndBadFlags() throws {
        _ = try TestCluster() // skips when the binaries are not built
        for name in ["master", "volume"] {
            let help = try runBinary(name, ["--help"])
            XCTAssertEqual(help.status, 0)
            XCTAssertTrue(help.output.contains("Usage: \(name)"), help.output)

            let bad = try runBinary(name, ["--frobnicate"])
            XCTAssertEqual(bad.status, 2)
            XCTAssertEqual(bad.output.split(separator: "\n").count, 1, bad.output)
            XCTAssertTrue(bad.output.contains("unknown option"), bad.output)

            let badPort = try runBinary(name, ["-p", "http", "-d", "/tmp/x"])
            XCTAssertEqual(badPort.status, 2, badPort.output)
        }
        let missing = try runBinary("master", ["-p", "6000"])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.output.contains("--db"), missing.output)
        let badVolume = try runBinary("master", ["-p", "6000", "-d", "/tmp/x", "-v", "localhost:7000"])
        XCTAssertEqual(badVolume.status, 2, badVolume.output)
    }

    func testUnusableDataDirectoryIsAOneLineErrorWithStatus2() throws {
        let cluster = try TestCluster()
        defer { cluster.shutdown() }
        let file = cluster.root + "/a-file"
        _ = FileManager.default.createFile(atPath: file, contents: Data([1]))
        for (name, flag) in [("master", "-d"), ("volume", "-d")] {
            let result = try runBinary(name, ["-p", String(freeLoopbackPort()), flag, file + "/sub", "--bind", "127.0.0.1"])
            XCTAssertEqual(result.status, 2, result.output)
            XCTAssertEqual(result.output.split(separator: "\n").count, 1, result.output)
        }
    }

    func testSecondMasterOnSameIndexIsRefused() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let result = try runBinary("master", ["-p", String(freeLoopbackPort()), "-d", cluster.databasePath, "--bind", "127.0.0.1"])
        XCTAssertEqual(result.status, 2, result.output)
        XCTAssertTrue(result.output.contains("lock"), result.output)
    }

    func testSigtermAndSigintStopCleanlyWithStatus0() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/k", body: [1]).status, 201)
        let master = cluster.master!
        kill(master.processIdentifier, SIGTERM)
        master.waitUntilExit()
        XCTAssertEqual(master.terminationStatus, 0)
        let volume = cluster.volumes[cluster.volumePorts[0]]!
        kill(volume.processIdentifier, SIGINT)
        volume.waitUntilExit()
        XCTAssertEqual(volume.terminationStatus, 0)
        // The index was closed cleanly and opens again.
        try cluster.startVolume(port: cluster.volumePorts[0])
        try cluster.restartMaster()
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/k").body, [1])
    }
}
