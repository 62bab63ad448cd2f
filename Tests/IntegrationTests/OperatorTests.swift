import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import TestSupport
import XCTest

/// The operator's tools against real daemons: the status page in a real browser (headless
/// Chromium), and the `kalavara` CLI's output, progress bars and exit codes.
final class OperatorTests: XCTestCase {
    private var cli: String { TestCluster.binDirectory + "/kalavara" }

    private func kalavara(_ cluster: TestCluster, _ arguments: [String], stdin: Data? = nil) throws -> (status: Int32, output: String) {
        try runTool(cli, ["-m", cluster.masterURL] + arguments, stdin: stdin)
    }

    /// Runs the CLI on a pseudo-terminal (script(1)), as an operator at a terminal would.
    private func onTerminal(_ cluster: TestCluster, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let command = ([cli, "-m", cluster.masterURL] + arguments).map { "'\($0)'" }.joined(separator: " ")
        return try runTool("script", ["-qec", command, "/dev/null"])
    }

    private func chromium() throws -> String {
        let path = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
        try require(path != nil, "chromium is not installed: scripts/test installs it (scripts/install-deps --test)")
        return path!
    }

    /// The page as the browser rendered it.
    private func renderedPage(_ url: String) throws -> String {
        let result = try runTool(try chromium(), ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                                  "--virtual-time-budget=1000", "--dump-dom", url])
        XCTAssertEqual(result.status, 0, result.output)
        return result.output
    }

    func testStatusPageShowsLiveDeadAndHealingInABrowser() throws {
        let cluster = try TestCluster.started(volumes: 3, masterExtra: ["--replicas", "2", "--out-after", "2", "--repair-rate", "1"])
        let value = [UInt8](repeating: 0x61, count: 512 * 1024)
        for index in 0..<16 { XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/page\(index)", body: value).status, 201) }
        try waitUntil("every volume reported its disk", timeout: 10) {
            let status = try? JSONDecoder().decode(ClusterStatus.self, from: Data(HTTP.send("GET", cluster.masterURL + "/admin/status").body))
            return status?.volumes.allSatisfy { $0.totalBytes != nil && $0.state == "up" } == true
        }

        // A live cluster: every volume up, with a disk bar, nothing to heal.
        let live = try renderedPage(cluster.masterURL + "/")
        for port in cluster.volumePorts { XCTAssertTrue(live.contains(cluster.volumeURL(port)), "volume \(port) listed") }
        XCTAssertEqual(live.components(separatedBy: "data-state=\"up\"").count - 1, 3, live)
        XCTAssertTrue(live.contains("class=\"bar\""), "free space as a bar")
        XCTAssertTrue(live.contains("3 / 3"), "volumes up")
        XCTAssertTrue(live.contains("Nothing to do"))
        XCTAssertTrue(live.contains("http-equiv=\"refresh\""), "it refreshes itself")
        XCTAssertFalse(live.contains("<script"), "no JavaScript")

        // A dead volume, then the repair that restores its copies (1 MiB/s: several seconds).
        let dead = cluster.volumePorts[0]
        cluster.killVolume(dead)
        var page = ""
        try waitUntil("the page shows the dead volume and the repair running", timeout: 30) {
            page = (try? self.renderedPage(cluster.masterURL + "/")) ?? ""
            return page.contains("Repair pass running")
        }
        XCTAssertTrue(page.contains("data-state=\"out\"") || page.contains("data-state=\"down\""), page)
        XCTAssertTrue(page.contains("2 / 3"), "volumes up")
        XCTAssertTrue(page.contains("warning"), "recent errors list the dead volume")
        XCTAssertTrue(page.contains("volume \(cluster.volumeURL(dead)) is down"), page)

        // The README's screenshot command works, at a phone's width.
        let shot = cluster.root + "/status.png"
        let result = try runTool(try chromium(), ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                                  "--hide-scrollbars", "--window-size=390,1200", "--screenshot=\(shot)", cluster.masterURL + "/"])
        XCTAssertEqual(result.status, 0, result.output)
        let png = try XCTUnwrap(FileManager.default.contents(atPath: shot))
        XCTAssertGreaterThan(png.count, 5000)
        XCTAssertEqual(Array(png.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
    }

    func testStatusPageEscapesWhatItShows() throws {
        let status = ClusterStatus(version: "1", master: "http://m:1", replicas: 1, signed: false, indexKeys: 0, indexDiskFreeBytes: 0,
                                   volumes: [], repair: .init(running: false, scanned: 0, underReplicated: 0, misplaced: 0, copied: 0,
                                                              bytesCopied: 0, errors: 0, passes: 0),
                                   rebuild: .init(running: false, volumesDone: 0, volumesTotal: 0, keysFound: 0),
                                   recentEvents: [.init(time: 0, level: "error", message: "key <script>alert(1)</script> & co")], time: 0)
        let html = StatusPage.html(status)
        XCTAssertFalse(html.contains("<script>"))
        XCTAssertTrue(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"))
    }

    func testCLIValuesProgressAndExitCodes() throws {
        let cluster = try TestCluster.started(volumes: 1)
        let file = cluster.root + "/big"
        let bytes = Data((0..<(6 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try bytes.write(to: URL(fileURLWithPath: file))

        // Piped: only the result, no bar. On a terminal: a progress bar, then the result.
        let quiet = try kalavara(cluster, ["put", file, "dir/big file"])
        XCTAssertEqual(quiet.status, 0, quiet.output)
        XCTAssertTrue(quiet.output.hasPrefix("stored dir/big file: 6.0 MiB, version \""), quiet.output)
        XCTAssertEqual(quiet.output.split(separator: "\n").count, 1, "nothing but the result when piped: \(quiet.output)")
        let loud = try onTerminal(cluster, ["put", file, "dir/big file 2"])
        XCTAssertEqual(loud.status, 0, loud.output)
        XCTAssertTrue(loud.output.contains("put dir/big file 2 ["), loud.output)
        XCTAssertTrue(loud.output.contains("100%"), loud.output)
        XCTAssertTrue(loud.output.contains("stored dir/big file 2"), loud.output)

        let copy = cluster.root + "/copy"
        XCTAssertEqual(try kalavara(cluster, ["get", "dir/big file", copy]).status, 0)
        XCTAssertEqual(FileManager.default.contents(atPath: copy), bytes)
        let download = try onTerminal(cluster, ["get", "dir/big file 2", copy])
        XCTAssertTrue(download.output.contains("get dir/big file 2 ["), download.output)
        XCTAssertEqual(FileManager.default.contents(atPath: copy), bytes)
        let piped = try kalavara(cluster, ["put", "-", "from-stdin"], stdin: Data("small value".utf8))
        XCTAssertEqual(piped.status, 0, piped.output)
        XCTAssertEqual(try kalavara(cluster, ["get", "from-stdin"]).output, "small value")
        XCTAssertEqual(try kalavara(cluster, ["ls", "dir/"]).output, "dir/big file\ndir/big file 2\n")
        XCTAssertEqual(try kalavara(cluster, ["rm", "from-stdin"]).output, "deleted from-stdin\n")

        // Errors: one line, exit 2, and no partial file left behind.
        for (arguments, expected) in [(["get", "no-such-key", copy + "-missing"], "404"), (["rm", "no-such-key"], "404"),
                                      (["bogus"], "unknown command"), (["get"], "missing expected argument"), (["put", "/no/such/file", "k"], "cannot open")] {
            let result = try kalavara(cluster, arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.output)")
            XCTAssertEqual(result.output.split(separator: "\n").count, 1, result.output)
            XCTAssertTrue(result.output.hasPrefix("kalavara: "), result.output)
            XCTAssertTrue(result.output.lowercased().contains(expected), result.output)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: copy + "-missing"))
        let unreachable = try runTool(cli, ["-m", "http://127.0.0.1:1", "status"])
        XCTAssertEqual(unreachable.status, 2)
        XCTAssertTrue(unreachable.output.hasPrefix("kalavara: cannot reach the master"), unreachable.output)
        // KALAVARA_MASTER instead of -m.
        setenv("KALAVARA_MASTER", cluster.masterURL, 1)
        defer { unsetenv("KALAVARA_MASTER") }
        let status = try runTool(cli, ["status"])
        XCTAssertEqual(status.status, 0, status.output)
        XCTAssertTrue(status.output.contains("volumes: 1 of 1 up"), status.output)
    }

    func testCLIDrivesHealingAndSendsCredentials() throws {
        let cluster = try TestCluster()
        try Data("operator-secret-0123456789\n".utf8).write(to: URL(fileURLWithPath: cluster.root + "/secret"))
        try Data("ops opspass read,write,admin\nviewer v read\n".utf8).write(to: URL(fileURLWithPath: cluster.root + "/users"))
        let security = ["--secret-file", cluster.root + "/secret"]
        cluster.volumeExtra = security
        let ports = try (0..<2).map { _ in try cluster.startVolume() }
        try cluster.startMaster(volumePorts: ports, extra: security + ["--auth-file", cluster.root + "/users"])
        let ops = ["--user", "ops:opspass"]
        try waitUntil("both volumes up", timeout: 10) {
            (try? self.kalavara(cluster, ops + ["volumes"]))?.output.components(separatedBy: " up ").count == 3
        }
        let denied = try kalavara(cluster, ["status"])
        XCTAssertEqual(denied.status, 2)
        XCTAssertTrue(denied.output.contains("401"), denied.output)
        XCTAssertTrue(try kalavara(cluster, ["--user", "viewer:v", "repair"]).output.contains("403"))
        for index in 0..<20 {
            XCTAssertEqual(try kalavara(cluster, ops + ["put", "-", "heal/\(index)"], stdin: Data("value \(index)".utf8)).status, 0)
        }

        let repair = try kalavara(cluster, ops + ["repair", "--wait", "--timeout", "60"])
        XCTAssertEqual(repair.status, 0, repair.output)
        XCTAssertTrue(repair.output.contains("repair pass done: 20 keys examined"), repair.output)
        let scrub = try onTerminal(cluster, ops + ["scrub", "--wait", "--timeout", "60"])
        XCTAssertEqual(scrub.status, 0, scrub.output)
        XCTAssertTrue(scrub.output.contains("scrub ["), "a progress bar on a terminal: \(scrub.output)")
        XCTAssertTrue(scrub.output.contains("scrub done on 2 volume(s): 20 files checked"), scrub.output)

        let leaving = cluster.volumeURL(ports[0])
        let removal = try kalavara(cluster, ops + ["remove-volume", leaving, "--wait", "--timeout", "60"])
        XCTAssertEqual(removal.status, 0, removal.output)
        XCTAssertTrue(removal.output.contains("removed \(leaving)"), removal.output)
        XCTAssertFalse(try kalavara(cluster, ops + ["volumes"]).output.contains(leaving))
        for index in 0..<20 { XCTAssertEqual(try kalavara(cluster, ops + ["get", "heal/\(index)"]).output, "value \(index)") }
        XCTAssertEqual(try kalavara(cluster, ops + ["add-volume", leaving]).status, 0, "a removed volume comes back")

        let rebuild = try kalavara(cluster, ops + ["rebuild", "--wait", "--timeout", "60"])
        XCTAssertEqual(rebuild.status, 0, rebuild.output)
        XCTAssertTrue(rebuild.output.contains("rebuild done"), rebuild.output)
        XCTAssertFalse(cluster.logText().contains("opspass"))
    }
}
