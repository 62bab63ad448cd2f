import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import TestSupport
import XCTest

/// The S3 gateway against real clients: boto3, the aws CLI and rclone (Tests/S3/clients.py)
/// drive two gateways over a signed cluster of two volumes at two replicas, with client
/// credentials on the master and on the gateways. Plus what no client library would send:
/// a body cut off mid-upload, and bad flags.
final class S3GatewayTests: XCTestCase {
    static let secretText = "kalavara-s3-test-secret-\(UUID().uuidString)"
    static let gatewayUsers = "s3user s3-secret-\(UUID().uuidString.prefix(8)) read,write\ns3reader reader-secret read\n"
        + "s3writer writer-secret write\n"

    private func signedCluster() throws -> TestCluster {
        let cluster = try TestCluster()
        let secretPath = cluster.root + "/secret"
        try Data(Self.secretText.utf8).write(to: URL(fileURLWithPath: secretPath))
        let masterUsers = cluster.root + "/master-users"
        try Data("root rootpass read,write,admin\n".utf8).write(to: URL(fileURLWithPath: masterUsers))
        cluster.volumeExtra = ["--secret-file", secretPath]
        let ports = try (0..<2).map { _ in try cluster.startVolume() }
        try cluster.startMaster(volumePorts: ports, extra: ["--secret-file", secretPath, "--auth-file", masterUsers, "--replicas", "2"])
        let credentials = [("Authorization", "Basic " + Data("root:rootpass".utf8).base64EncodedString())]
        try cluster.waitUntilVolumesUp(2, headers: credentials)
        return cluster
    }

    private static var scriptPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("S3/clients.py").path
    }

    func testBoto3TheAwsCLIAndRcloneUseTheGatewayUnchanged() throws {
        try require((try? runTool("python3", ["-c", "import boto3, requests"]))?.status == 0
                        && (try? runTool("aws", ["--version"]))?.status == 0 && (try? runTool("rclone", ["version"]))?.status == 0,
                    "boto3, requests, the aws CLI and rclone are needed (scripts/install-deps --test installs them)")
        let cluster = try signedCluster()
        let users = cluster.root + "/s3-users"
        try Data(Self.gatewayUsers.utf8).write(to: URL(fileURLWithPath: users))
        let secretPath = cluster.root + "/secret"
        let gateway = try cluster.startGateway(extra: ["--secret-file", secretPath, "--auth-file", users])
        let lines = Self.gatewayUsers.split(separator: "\n").map { $0.split(separator: " ") }
        let work = cluster.root + "/work"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        var environment = ["S3_ENDPOINT": "http://127.0.0.1:\(gateway)", "MASTER_URL": cluster.masterURL, "MASTER_AUTH": "root:rootpass",
                           "ACCESS_KEY": String(lines[0][0]), "SECRET_KEY": String(lines[0][1]),
                           "RO_ACCESS_KEY": String(lines[1][0]), "RO_SECRET_KEY": String(lines[1][1]),
                           "WO_ACCESS_KEY": String(lines[2][0]), "WO_SECRET_KEY": String(lines[2][1]), "WORKDIR": work]
        func clients(_ checks: [String]) throws -> String {
            let (status, output) = try runTool("env", environment.map { "\($0.key)=\($0.value)" } + ["python3", Self.scriptPath] + checks)
            XCTAssertEqual(status, 0, "clients.py failed:\n\(output)\nlogs:\n\(cluster.logText().suffix(6000))")
            return output
        }
        let checks = ["buckets", "objects", "ranges_and_conditions", "listing", "copy_and_delete_objects", "presigned",
                      "credentials", "checksums", "signed_chunks", "multipart", "review_edges", "aws_cli", "rclone", "delete_buckets"]
        var output = try clients(checks)
        // Then a second, open gateway on the same cluster (stateless: it sees the same
        // objects), whose short grace shows abandoned uploads being swept. Started only now:
        // its sweep would take the uploads of the checks above too.
        let sweeper = try cluster.startGateway(extra: ["--secret-file", secretPath, "--upload-grace", "3", "--sweep-every", "1"])
        environment["S3_SWEEP_ENDPOINT"] = "http://127.0.0.1:\(sweeper)"
        output += try clients(["abandoned_uploads_are_swept"])
        for check in checks + ["abandoned_uploads_are_swept"] {
            XCTAssertTrue(output.contains("ok \(check)\n"), "check \(check) did not pass:\n\(output)")
        }
        // Two replicas of what S3 wrote, and no secret in any log.
        let logs = cluster.logText()
        XCTAssertFalse(logs.contains(String(lines[0][1])), "a gateway secret key reached a log")
        XCTAssertFalse(logs.contains(Self.secretText), "the cluster secret reached a log")
    }

    /// A client that stops mid-body: nothing is stored, nothing partial is visible, and the
    /// volume keeps no temporary file. And one that sends more than it announced.
    func testACutUploadStoresNothing() throws {
        let cluster = try TestCluster.started(volumes: 1)
        let gateway = try cluster.startGateway()
        let base = "http://127.0.0.1:\(gateway)"
        XCTAssertEqual(try HTTP.send("PUT", base + "/cut-bucket").status, 200)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(gateway).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(connected, 0)
        let head = "PUT /cut-bucket/half HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
        let half = [UInt8](repeating: 0x61, count: 512 * 1024)
        _ = head.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        _ = half.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        usleep(300_000)
        close(fd)
        let port = cluster.volumePorts[0]
        try waitUntil("the volume dropped the cut upload", timeout: 5) { cluster.tmpFiles(port).isEmpty }
        XCTAssertEqual(try HTTP.send("HEAD", base + "/cut-bucket/half").status, 404)
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/cut-bucket/half").status, 404)
        XCTAssertTrue(cluster.tmpFiles(port).isEmpty)
        XCTAssertTrue(cluster.valueFiles(port).allSatisfy { !$0.contains("half") })

        // A Content-MD5 that does not match: 400 BadDigest, and the old value stays.
        XCTAssertEqual(try HTTP.send("PUT", base + "/cut-bucket/kept", body: Array("old".utf8)).status, 200)
        let wrong = Data(MD5.digest(Array("something else".utf8))).base64EncodedString()
        let refused = try HTTP.send("PUT", base + "/cut-bucket/kept", body: Array("new".utf8), headers: [("Content-MD5", wrong)])
        XCTAssertEqual(refused.status, 400)
        XCTAssertTrue(refused.text.contains("<Code>BadDigest</Code>"), refused.text)
        XCTAssertEqual(try HTTP.send("GET", base + "/cut-bucket/kept").text, "old")
        // S3's error bodies for what it refuses, never a crash or a hang.
        for (method, path, code) in [("GET", "/cut-bucket/missing", "NoSuchKey"), ("GET", "/no-such-bucket/k", "NoSuchBucket"),
                                     ("GET", "/cut-bucket?policy", "NotImplemented"), ("PUT", "/x_y", "InvalidBucketName"),
                                     ("DELETE", "/cut-bucket", "BucketNotEmpty")] {
            let answer = try HTTP.send(method, base + path)
            XCTAssertTrue(answer.text.contains("<Code>\(code)</Code>"), "\(method) \(path): \(answer.status) \(answer.text)")
        }
    }

    /// Two writers of one object: the one issued its version first finishes its upload
    /// last, so the master refuses its commit (`superseded`). As in S3, where the last
    /// writer wins and every writer hears success, both get `200`, and the object is the
    /// later-issued write's.
    func testConcurrentWritesOfOneObjectBothSucceedAndTheLaterIssuedWins() throws {
        let cluster = try TestCluster.started(volumes: 1)
        let gateway = try cluster.startGateway()
        let base = "http://127.0.0.1:\(gateway)"
        XCTAssertEqual(try HTTP.send("PUT", base + "/race").status, 200)
        let first = [UInt8](repeating: 0x61, count: 1 << 20), second = Array("the later-issued write".utf8)
        let url = try XCTUnwrap(HTTPURL(base + "/race/object"))
        let slow = try HTTPClient(timeout: 10, maxIdlePerHost: 0).startUpload("PUT", url, contentLength: first.count)
        first[..<(first.count / 2)].withUnsafeBytes { slow.write($0) }
        // Its version issued and its upload under way on the volume: now the second writer.
        try waitUntil("the first upload reached the volume") { !cluster.tmpFiles(cluster.volumePorts[0]).isEmpty }
        XCTAssertEqual(try HTTP.send("PUT", base + "/race/object", body: second).status, 200)
        first[(first.count / 2)...].withUnsafeBytes { slow.write($0) }
        let answer = try slow.finish()
        XCTAssertEqual(answer.status, 200, answer.text)
        XCTAssertEqual(try HTTP.send("GET", base + "/race/object").body, second)
        XCTAssertTrue(cluster.logText().contains("rules this write out"), "the first write's commit was not superseded")
    }

    func testGatewayFlags() throws {
        let cluster = try TestCluster()
        _ = cluster
        let binary = TestCluster.binDirectory + "/kalavara-s3"
        let missing = try runTool(binary, [])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.output.contains("missing required option -m/--master"), missing.output)
        let badPort = try runTool(binary, ["-m", "http://127.0.0.1:1", "-p", "0"])
        XCTAssertEqual(badPort.status, 2)
        XCTAssertEqual(badPort.output.split(separator: "\n").count, 1, badPort.output)
        XCTAssertEqual(try runTool(binary, ["--help"]).status, 0)
        let noAuthFile = try runTool(binary, ["-m", "http://127.0.0.1:1", "-p", String(freeLoopbackPort()), "--auth-file", "/nonexistent"])
        XCTAssertEqual(noAuthFile.status, 2)
    }
}
