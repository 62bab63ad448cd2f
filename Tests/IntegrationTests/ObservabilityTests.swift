import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// What an operator watches: `/metrics` of each daemon parses with Prometheus' own text
/// parser (the Python client's) and has the latency histograms; a PUT's request id is in
/// the master's and the volume's log lines.
final class ObservabilityTests: XCTestCase {
    /// Families parsed by `prometheus_client`: name → type, and every sample line as text.
    private func parsePrometheus(_ text: String) throws -> (types: [String: String], samples: [String]) {
        let script = """
        import sys
        from prometheus_client.parser import text_string_to_metric_families
        for family in text_string_to_metric_families(sys.stdin.read()):
            print("F", family.name, family.type)
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                print("S", sample.name, labels, sample.value)
        """
        let result = try runTool("python3", ["-c", script], stdin: Data(text.utf8))
        guard result.status == 0 else {
            throw ClusterError("the Prometheus parser refused the page (pip install prometheus_client?): \(result.output)")
        }
        var types: [String: String] = [:], samples: [String] = []
        for line in result.output.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
            if fields[0] == "F" { types[fields[1]] = fields[2] } else { samples.append(fields.dropFirst().joined(separator: " ")) }
        }
        return (types, samples)
    }

    /// The value of the sample `name{labels}` (labels sorted, `k=v,k=v`), if present.
    private func value(_ samples: [String], _ name: String, _ labels: String = "") -> Double? {
        for sample in samples {
            let fields = sample.split(separator: " ", omittingEmptySubsequences: false)
            if fields.count == 3, fields[0] == name, fields[1] == labels { return Double(fields[2]) }
        }
        return nil
    }

    func testMetricsOfEveryDaemonParseAndHaveTheHistograms() throws {
        let cluster = try TestCluster.started(volumes: 2, masterExtra: ["--replicas", "2"])
        defer { cluster.shutdown() }
        for index in 0..<5 {
            XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/m\(index)", body: Array("value".utf8)).status, 201)
            XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/m\(index)").status, 200)
        }
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/absent").status, 404)

        let master = try parsePrometheus(try HTTP.send("GET", cluster.masterURL + "/metrics").text)
        for histogram in ["kalavara_http_request_duration_seconds", "kalavara_rocksdb_write_duration_seconds",
                          "kalavara_event_loop_lag_seconds"] {
            XCTAssertEqual(master.types[histogram], "histogram", histogram)
        }
        for counter in ["kalavara_http_requests", "kalavara_commits", "kalavara_http_received_bytes", "kalavara_http_sent_bytes"] {
            XCTAssertEqual(master.types[counter], "counter", counter)
        }
        XCTAssertEqual(master.types["kalavara_http_open_connections"], "gauge")
        XCTAssertEqual(master.types["kalavara_index_disk_free_bytes"], "gauge")
        XCTAssertEqual(value(master.samples, "kalavara_http_requests_total", "route=store-write,status=307"), 5)
        XCTAssertEqual(value(master.samples, "kalavara_http_requests_total", "route=store-read,status=302"), 5)
        XCTAssertEqual(value(master.samples, "kalavara_http_requests_total", "route=store-read,status=404"), 1)
        XCTAssertEqual(value(master.samples, "kalavara_commits_total", "op=put"), 5)
        XCTAssertEqual(value(master.samples, "kalavara_http_request_duration_seconds_count", "route=commit"), 5)
        XCTAssertEqual(value(master.samples, "kalavara_rocksdb_write_duration_seconds_count"), 5)

        var fsyncs = 0.0
        for port in cluster.volumePorts {
            let volume = try parsePrometheus(try HTTP.send("GET", cluster.volumeURL(port) + "/metrics").text)
            for histogram in ["kalavara_http_request_duration_seconds", "kalavara_value_fsync_duration_seconds",
                              "kalavara_directory_fsync_duration_seconds", "kalavara_commit_round_trip_seconds",
                              "kalavara_event_loop_lag_seconds"] {
                XCTAssertEqual(volume.types[histogram], "histogram", histogram)
            }
            XCTAssertEqual(volume.types["kalavara_free_bytes"], "gauge")
            XCTAssertEqual(volume.types["kalavara_journal_checkpoint_duration_seconds"], "histogram")
            fsyncs += value(volume.samples, "kalavara_value_fsync_duration_seconds_count") ?? 0
            fsyncs += value(volume.samples, "kalavara_journaled_copies_total") ?? 0
        }
        XCTAssertEqual(fsyncs, 10, "every copy of every value is fsynced once, or journaled instead")
    }

    /// A volume removes what deletes and overwrites left behind in batches and reports each
    /// batch in one call: every copy goes, and the master's removal queue never has to ask
    /// again (it would after 5 s).
    func testRemovalsAreReportedInBatchesAndNeverAskedAgain() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let keys = 40
        for index in 0..<keys {
            XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/r\(index)", body: [UInt8](repeating: 1, count: 100)).status, 201)
        }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/r0", body: [2]).status, 201) // supersedes a copy
        let masterURL = cluster.masterURL
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for index in stride(from: 1 + worker, to: keys, by: 8) {
                XCTAssertEqual(try? HTTP.follow("DELETE", masterURL + "/store/r\(index)").status, 204)
            }
        }
        let port = cluster.volumePorts[0]
        let data = cluster.volumeDirectory(port) + "/data"
        func files() -> Int {
            (FileManager.default.enumerator(atPath: data)?.allObjects as? [String] ?? []).filter { $0.contains(".") }.count
        }
        try waitUntil("the copies removed", timeout: 10) { files() == 1 }
        sleep(7) // past the age at which the master's removal queue would ask for what was not reported
        let volume = try parsePrometheus(try HTTP.send("GET", cluster.volumeURL(port) + "/metrics").text)
        XCTAssertNil(value(volume.samples, "kalavara_http_requests_total", "route=replica,status=204"),
                     "the master asked for a removal the volume had reported")
        let master = try parsePrometheus(try HTTP.send("GET", cluster.masterURL + "/metrics").text)
        let reports = try XCTUnwrap(value(master.samples, "kalavara_http_requests_total", "route=purged,status=200"))
        XCTAssertGreaterThanOrEqual(reports, 1)
        XCTAssertLessThanOrEqual(reports, Double(keys))
        XCTAssertEqual(files(), 1)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/r0").body, [2])
    }

    func testARequestIDFollowsAPutIntoTheCommit() throws {
        let cluster = try TestCluster.started(volumes: 2, masterExtra: ["--replicas", "2", "--log-level", "debug"],
                                              volumeExtra: ["--log-level", "debug"])
        defer { cluster.shutdown() }
        let put = try HTTP.follow("PUT", cluster.masterURL + "/store/traced", body: [1, 2, 3],
                                  headers: [("X-Request-Id", "trace-me-42")])
        XCTAssertEqual(put.status, 201)
        let redirect = try HTTP.send("PUT", cluster.masterURL + "/store/other")
        XCTAssertEqual(redirect.status, 307)
        XCTAssertEqual(redirect.headers["X-Request-Id"]?.count, 16, "a request id is made when the client sends none")
        try waitUntil("log lines written", timeout: 5) {
            let logs = cluster.logText()
            return logs.contains("PUT redirected key=traced rid=trace-me-42")
                && logs.contains("commit key=traced op=put rid=trace-me-42")
                && logs.contains(" volume debug: stored key=traced rid=trace-me-42 size=3")
        }
    }

    /// A daemon whose port is taken says so in one line and exits 2 (it used to die of
    /// SIGILL in libdispatch, releasing a timer source that had never been started).
    func testPortInUseIsAOneLineErrorWithStatus2() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        for (name, port) in [("master", cluster.masterPort), ("volume", cluster.volumePorts[0])] {
            let result = try runTool(TestCluster.binDirectory + "/" + name,
                                     ["-p", String(port), "-d", cluster.root + "/taken-\(name)", "--bind", "127.0.0.1"])
            XCTAssertEqual(result.status, 2, result.output)
            XCTAssertEqual(result.output.split(separator: "\n").count, 1, result.output)
            XCTAssertTrue(result.output.contains("Address already in use"), result.output)
        }
    }
}
