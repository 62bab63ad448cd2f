import Foundation
import TestSupport
import XCTest

/// The systemd deployment (deploy/systemd, scripts/install, docs/deployment.md): the install
/// puts every file where the units look for it, and systemd itself checks the units, so a
/// typo in a unit or in their shared sandbox fails here rather than on an operator's host.
final class DeploymentTests: XCTestCase {
    private var stage = ""

    override func setUpWithError() throws {
        try requireTool("systemd-analyze", ["--version"])
        stage = NSTemporaryDirectory() + "kalavara-deploy-" + UUID().uuidString
        let result = try runTool("env", ["DESTDIR=" + stage, Self.repository + "/scripts/install", "--from", TestCluster.binDirectory])
        XCTAssertEqual(result.status, 0, result.output)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: stage)
    }

    private static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    private static let units = ["kalavara-master.service", "kalavara-volume@.service", "kalavara-s3.service"]
    private var unitDirectory: String { stage + "/etc/systemd/system" }

    func testInstallPutsTheBinariesTheUnitsStartAndTheirUser() throws {
        for binary in ["master", "volume", "kalavara-s3", "kalavara"] {
            XCTAssertTrue(FileManager.default.isExecutableFile(atPath: stage + "/usr/local/bin/" + binary), binary)
        }
        for unit in Self.units {
            let text = try String(contentsOfFile: unitDirectory + "/" + unit, encoding: .utf8)
            let execStart = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("ExecStart=") }, unit)
            let binary = String(execStart.dropFirst("ExecStart=".count).split(separator: " ")[0])
            XCTAssertTrue(binary.hasPrefix("/usr/local/bin/"), execStart.description)
            XCTAssertTrue(FileManager.default.isExecutableFile(atPath: stage + binary), execStart.description)
            let environmentFile = try XCTUnwrap(text.split(separator: "\n").last { $0.hasPrefix("EnvironmentFile=") }, unit)
            let example = environmentFile.dropFirst("EnvironmentFile=".count).replacingOccurrences(of: "%i", with: "disk1")
            XCTAssertTrue(FileManager.default.fileExists(atPath: stage + example), "no example for \(environmentFile)")
        }
        let users = try runTool("systemd-sysusers", ["--root=" + stage, "kalavara.conf"])
        XCTAssertEqual(users.status, 0, users.output)
        let passwd = try String(contentsOfFile: stage + "/etc/passwd", encoding: .utf8)
        XCTAssertTrue(passwd.contains("kalavara:x:") && passwd.contains(":/usr/sbin/nologin"), passwd)
    }

    func testSystemdAcceptsEveryUnitAndRefusesBrokenOnes() throws {
        // verify wants each ExecStart's binary: the installed units start the staged ones.
        for unit in Self.units {
            try edit(unit, "/usr/local/bin/", stage + "/usr/local/bin/")
        }
        for unit in Self.units {
            XCTAssertEqual(try verify(unit).output, "", unit)
        }
        // The same check on broken copies: a misspelt key in a unit, a value in the shared
        // sandbox systemd cannot parse, a binary that is not there.
        try edit("kalavara-master.service", "RestartSec=1", "RestartSc=1")
        XCTAssertTrue(try verify("kalavara-master.service").output.contains("Unknown key 'RestartSc'"))
        try edit("kalavara-.service.d/hardening.conf", "MemoryDenyWriteExecute=yes", "MemoryDenyWriteExecute=always")
        XCTAssertTrue(try verify("kalavara-s3.service").output.contains("Failed to parse boolean value"))
        try edit("kalavara-volume@.service", "/usr/local/bin/volume", "/usr/local/bin/volumes")
        let missing = try verify("kalavara-volume@.service")
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.output.contains("is not executable"), missing.output)
    }

    /// `systemd-analyze security` rates a unit from 0 (locked down) to 10 (exposed); each
    /// scores 1.4 with the sandbox in kalavara-.service.d (docs/deployment.md), 9.6 without.
    func testEveryUnitGetsTheSharedSandbox() throws {
        for unit in Self.units {
            let result = try runTool("systemd-analyze", ["security", "--offline=yes", "--no-pager", unitDirectory + "/" + unit])
            let overall = try XCTUnwrap(result.output.split(separator: "\n").first { $0.contains("Overall exposure level") }, result.output)
            let score = try XCTUnwrap(overall.split(separator: " ").compactMap { Double($0) }.first, String(overall))
            XCTAssertLessThanOrEqual(score, 2.0, "\(unit): \(overall)")
        }
    }

    /// `systemd-analyze verify` on an installed unit (and the drop-in beside it). Its
    /// warnings are the output; it exits 0 on some, so a clean unit is one with no output.
    private func verify(_ unit: String) throws -> (status: Int32, output: String) {
        try runTool("systemd-analyze", ["verify", "--no-pager", unitDirectory + "/" + unit])
    }

    private func edit(_ file: String, _ text: String, _ replacement: String) throws {
        let path = unitDirectory + "/" + file
        let original = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertTrue(original.contains(text), "\(file) lacks \(text)")
        try original.replacingOccurrences(of: text, with: replacement).write(toFile: path, atomically: true, encoding: .utf8)
    }
}
