import Foundation
import KalavaraHTTP
import TestSupport
import XCTest

/// The daemons over HTTPS (`--tls-cert`, `--tls-key`, `--tls-ca`), with a CA and
/// certificates made by `openssl` for each test: what clients see (curl, our own client),
/// what the daemons verify of each other, and what a client that speaks no TLS, or stalls
/// in the handshake, gets.
final class TLSTests: XCTestCase {
    /// A cluster whose master (`--replicas` copies) and `volumes` volumes speak HTTPS.
    private func tlsCluster(volumes: Int = 2, masterExtra: [String] = []) throws -> (TestCluster, TestCertificates) {
        try require(TestCertificates.available, "openssl is needed to make the test certificates")
        let cluster = try TestCluster()
        let certificates = try TestCertificates(directory: cluster.root + "/pki")
        try cluster.useTLS(certificates)
        let ports = try (0..<volumes).map { _ in try cluster.startVolume() }
        try cluster.startMaster(volumePorts: ports, extra: ["--replicas", String(volumes)] + masterExtra)
        try cluster.waitUntilVolumesUp(volumes)
        return (cluster, certificates)
    }

    /// The README's curl commands, over HTTPS, with two copies on two TLS volumes.
    func testCurlStoresReadsAndDeletesOverTLS() throws {
        try requireTool("curl", ["--version"])
        let (cluster, certificates) = try tlsCluster()
        let url = cluster.masterURL + "/store/greeting"
        let trust = ["--cacert", certificates.authority]
        let put = try runTool("curl", ["-sS", "-f", "-L", "-XPUT", "-d", "value", url] + trust)
        XCTAssertEqual(put.status, 0, put.output)
        XCTAssertEqual(cluster.copies(of: "greeting").count, 2, "both TLS volumes hold a copy")
        let redirect = try HTTP.send("GET", url)
        XCTAssertEqual(redirect.status, 302)
        XCTAssertTrue(redirect.headers["Location"]?.hasPrefix("https://127.0.0.1:") ?? false, "redirects name https URLs")
        let get = try runTool("curl", ["-sS", "-f", "-L", url] + trust)
        XCTAssertEqual(get.status, 0, get.output)
        XCTAssertEqual(get.output, "value")
        let delete = try runTool("curl", ["-sS", "-f", "-L", "-XDELETE", url] + trust)
        XCTAssertEqual(delete.status, 0, delete.output)
        XCTAssertEqual(try HTTP.follow("GET", url).status, 404)
    }

    /// A CA curl was not told to trust is refused, and so is one our own client (the
    /// kalavara command) was not told to trust.
    func testUnknownAuthorityIsRefused() throws {
        try requireTool("curl", ["--version"])
        let (cluster, certificates) = try tlsCluster(volumes: 1)
        let other = try TestCertificates(directory: cluster.root + "/other", name: "Someone Else's CA")
        XCTAssertEqual(try cluster.put("k", "v").status, 201)
        let curl = try runTool("curl", ["-sS", "-L", cluster.masterURL + "/store/k", "--cacert", other.authority])
        XCTAssertEqual(curl.status, 60, "curl: peer certificate cannot be authenticated: \(curl.output)")

        let command = TestCluster.binDirectory + "/kalavara"
        let refused = try runTool(command, ["get", "k", "-m", cluster.masterURL, "--tls-ca", other.authority])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.output.contains("certificate"), refused.output)
        let trusted = try runTool(command, ["get", "k", "-m", cluster.masterURL, "--tls-ca", certificates.authority])
        XCTAssertEqual(trusted.status, 0, trusted.output)
        XCTAssertEqual(trusted.output, "v")
    }

    /// Plain HTTP to a TLS port gets no answer, and leaves the server serving TLS.
    func testPlainHTTPToTLSPortGetsNothing() throws {
        let (cluster, _) = try tlsCluster(volumes: 1)
        let plain = "http://127.0.0.1:\(cluster.masterPort)/health"
        XCTAssertThrowsError(try HTTP.send("GET", plain, timeout: 3)) { error in
            XCTAssertNotEqual(error as? ConnectionError, .timedOut, "the server closes, it does not wedge")
        }
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/health").status, 200)
    }

    /// A large value and a range of it come back byte-exact over TLS (the volume's file
    /// answers go through OpenSSL, or kernel TLS where the kernel has it).
    func testLargeValueAndRangeOverTLS() throws {
        let (cluster, _) = try tlsCluster()
        let value = (0..<(24 << 20)).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
        XCTAssertEqual(try cluster.put("big", value).status, 201)
        // Past the test client's in-memory limit: streamed from the volume the master names.
        let location = try XCTUnwrap(try HTTP.send("GET", cluster.masterURL + "/store/big").headers["Location"])
        var whole: [UInt8] = []
        let answer = try HTTPClient(timeout: 30).download("GET", try XCTUnwrap(HTTPURL(location))) { whole.append(contentsOf: $0) }
        XCTAssertEqual(answer.status, 200)
        XCTAssertTrue(whole == value, "24 MiB back byte for byte")
        let range = try cluster.get("big", headers: [("Range", "bytes=1000000-3000000")])
        XCTAssertEqual(range.status, 206)
        XCTAssertTrue(range.body == Array(value[1_000_000...3_000_000]))
    }

    /// A volume whose certificate the cluster's CA did not sign is never registered: the
    /// master's health calls to it refuse it. One the CA signed, started the same way, is.
    func testVolumeOutsideTheAuthorityIsNeverRegistered() throws {
        let (cluster, _) = try tlsCluster(volumes: 1)
        let rogue = try TestCertificates(directory: cluster.root + "/rogue", name: "Rogue CA").leaf("volume", serial: 7)
        // Started by hand: this test's client refuses its certificate too, so there is no
        // health check to wait for.
        let outsider = freeLoopbackPort()
        cluster.volumes[outsider] = try cluster.launch("volume", [
            "-p", String(outsider), "-d", cluster.volumeDirectory(outsider), "--bind", "127.0.0.1", "-m", cluster.masterURL,
            "-b", cluster.volumeURL(outsider), "--heartbeat", "0.5",
        ] + cluster.tlsFlags + ["--tls-cert", rogue.certificate, "--tls-key", rogue.key], log: "volume-\(outsider)")
        try cluster.startVolume(register: true)
        try cluster.waitUntilVolumesUp(2)
        Thread.sleep(forTimeInterval: 2) // four heartbeats of the outsider
        let volumes = try HTTP.send("GET", cluster.masterURL + "/admin/volumes").text
        XCTAssertEqual(volumes.components(separatedBy: "\"state\":\"up\"").count - 1, 2, volumes)
        let outsiderEntry = volumes.components(separatedBy: "},").first { $0.contains(cluster.volumeURL(outsider)) }
        XCTAssertFalse(outsiderEntry?.contains("\"state\":\"up\"") ?? false, volumes)
    }

    /// `SIGHUP` makes the server present a renewed certificate to new connections, while a
    /// keep-alive connection opened before it goes on being served.
    func testRenewedCertificateIsServedAfterHangup() throws {
        let (cluster, certificates) = try tlsCluster(volumes: 1)
        let port = cluster.masterPort
        func servedSerial() throws -> String {
            let command = "openssl s_client -connect 127.0.0.1:\(port) -CAfile \(certificates.authority) </dev/null 2>/dev/null"
                + " | openssl x509 -noout -serial"
            return try runTool("sh", ["-c", command]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        XCTAssertEqual(try servedSerial(), "serial=01")
        let kept = try HTTPClient.connect(try XCTUnwrap(HTTPURL(cluster.masterURL)), timeout: 5)
        defer { kept.close() }
        XCTAssertTrue(try Self.headHealth(on: kept).hasPrefix("HTTP/1.1 200"))

        try certificates.leaf("daemon", serial: 2)
        kill(try XCTUnwrap(cluster.master).processIdentifier, SIGHUP)
        try waitUntil("the renewed certificate served", timeout: 5) { (try? servedSerial()) == "serial=02" }
        XCTAssertTrue(try Self.headHealth(on: kept).hasPrefix("HTTP/1.1 200"), "the connection opened before the reload")
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/health").status, 200)
    }

    /// Without TLS or `--auth-file` a daemon has nothing to reload, and `SIGHUP` (what the
    /// systemd units' `ExecReload` sends) leaves it running rather than ending it.
    func testHangupWithNothingToReloadLeavesDaemonsRunning() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let master = try XCTUnwrap(cluster.master)
        let volume = try XCTUnwrap(cluster.volumes.values.first)
        kill(master.processIdentifier, SIGHUP)
        kill(volume.processIdentifier, SIGHUP)
        try waitUntil("both said so in their logs", timeout: 5) {
            cluster.logText().components(separatedBy: "SIGHUP: no TLS certificate to reload").count == 3
        }
        XCTAssertTrue(master.isRunning && volume.isRunning)
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/health").status, 200)
    }

    /// Sends `HEAD /health` on `socket` and returns the answer's head.
    private static func headHealth(on socket: BufferedSocket) throws -> String {
        try socket.write(Array("HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
        var head: [UInt8] = []
        while !head.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) {
            if socket.bufferedCount == 0 { guard try socket.fill() else { throw ClusterError("closed") } }
            head.append(socket.buffered[0])
            socket.consume(1)
        }
        return String(decoding: head, as: UTF8.self)
    }

    /// boto3 and the aws CLI against a gateway that speaks HTTPS, over a cluster that
    /// does too (the gateway verifies the master and volumes against the same CA).
    func testBoto3AndTheAwsCLIUseTheGatewayOverTLS() throws {
        try require((try? runTool("python3", ["-c", "import boto3, requests"]))?.status == 0
                        && (try? runTool("aws", ["--version"]))?.status == 0,
                    "boto3, requests and the aws CLI are needed (scripts/install-deps --test installs them)")
        let (cluster, certificates) = try tlsCluster()
        let gateway = try cluster.startGateway()
        let users = ["s3user secret-one read,write", "s3reader secret-two read", "s3writer secret-three write"]
        let work = cluster.root + "/work"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let environment = ["S3_ENDPOINT": "https://127.0.0.1:\(gateway)", "MASTER_URL": cluster.masterURL, "WORKDIR": work,
                           "AWS_CA_BUNDLE": certificates.authority, "REQUESTS_CA_BUNDLE": certificates.authority]
            .merging(zip(["ACCESS_KEY", "RO_ACCESS_KEY", "WO_ACCESS_KEY"], users.map { String($0.split(separator: " ")[0]) })) { $1 }
            .merging(zip(["SECRET_KEY", "RO_SECRET_KEY", "WO_SECRET_KEY"], users.map { String($0.split(separator: " ")[1]) })) { $1 }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("S3/clients.py").path
        let checks = ["buckets", "objects", "ranges_and_conditions", "multipart", "aws_cli", "delete_buckets"]
        let (status, output) = try runTool("env", environment.map { "\($0.key)=\($0.value)" } + ["python3", script] + checks)
        XCTAssertEqual(status, 0, "clients.py failed:\n\(output)\nlogs:\n\(cluster.logText().suffix(6000))")
        for check in checks { XCTAssertTrue(output.contains("ok \(check)\n"), "check \(check) did not pass:\n\(output)") }
    }

    /// More pipelined requests than the server's read buffer holds: what OpenSSL decrypted
    /// beyond the buffer is read when the buffer drains, though epoll never reports it.
    func testPipelinedRequestsBeyondTheReadBufferAreAllAnswered() throws {
        let (cluster, _) = try tlsCluster(volumes: 1)
        defer { cluster.shutdown() }
        // Bursts of 70 to 100 KiB, each on a connection of its own: where the buffer fills
        // in the last record read varies with the size.
        for count in stride(from: 330, through: 480, by: 10) {
            let socket = try HTTPClient.connect(try XCTUnwrap(HTTPURL(cluster.masterURL)), timeout: 10)
            defer { socket.close() }
            let request = "HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: \(String(repeating: "p", count: 160))\r\n\r\n"
            try socket.write(Array(String(repeating: request, count: count).utf8))
            var answered = 0
            var text = ""
            let deadline = Date().addingTimeInterval(5)
            while answered < count, Date() < deadline {
                guard (try? socket.fill()) == true else { break }
                text += String(decoding: socket.buffered, as: UTF8.self)
                socket.consume(socket.bufferedCount)
                answered = text.components(separatedBy: "HTTP/1.1 200").count - 1
            }
            XCTAssertEqual(answered, count, "a burst of \(count) requests")
        }
    }

    /// A connection that never completes its handshake (nothing sent, or half a
    /// ClientHello) is closed after the head timeout, like a head that does not arrive.
    func testStalledHandshakeIsClosedAfterHeadTimeout() throws {
        let (cluster, _) = try tlsCluster(volumes: 1, masterExtra: ["--head-timeout", "1"])
        let address = HTTPURL("http://127.0.0.1:\(cluster.masterPort)")!
        let halfHello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]
        for opening in [[], halfHello] {
            let socket = try HTTPClient.connect(address, timeout: 10)
            defer { socket.close() }
            if !opening.isEmpty { try socket.write(opening) }
            let started = Date()
            var buffer = [UInt8](repeating: 0, count: 64)
            let read = try buffer.withUnsafeMutableBytes { try socket.read(into: $0) }
            let waited = Date().timeIntervalSince(started)
            XCTAssertEqual(read, 0, "closed without an answer")
            XCTAssertGreaterThan(waited, 0.5)
            XCTAssertLessThan(waited, 5, "closed after the head timeout (1 s, swept every 0.2 s), not the idle one")
        }
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/health").status, 200)
    }
}
