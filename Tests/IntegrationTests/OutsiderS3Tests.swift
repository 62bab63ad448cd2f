import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraS3
import KalavaraSupport
import XCTest

/// What outsiders found in the S3 gateway (issue 21), each against a real signed cluster and
/// gateway: aws-chunked bodies that arrive in pieces, Signature V2 dates as s3cmd sends
/// them, s3-tests cases that were bugs, V2 presigned URLs without end, and restic from
/// `init` to `restore`.
final class OutsiderS3Tests: XCTestCase {
    static let accessKey = "outsider"
    static let secretKey = "outsider-secret-\(UUID().uuidString.prefix(8))"

    /// A cluster as the README sets one up: a secret on every daemon, client credentials on
    /// the master; and a gateway with the secret and its own `--auth-file`.
    private func signedGateway() throws -> (cluster: TestCluster, port: Int) {
        let cluster = try TestCluster()
        let secret = cluster.root + "/secret"
        try Data("outsider-cluster-secret-\(UUID().uuidString)".utf8).write(to: URL(fileURLWithPath: secret))
        let masterUsers = cluster.root + "/master-users"
        try Data("root rootpass read,write,admin\n".utf8).write(to: URL(fileURLWithPath: masterUsers))
        cluster.volumeExtra = ["--secret-file", secret]
        let port = try cluster.startVolume()
        try cluster.startMaster(volumePorts: [port], extra: ["--secret-file", secret, "--auth-file", masterUsers])
        let credentials = [("Authorization", "Basic " + Data("root:rootpass".utf8).base64EncodedString())]
        try cluster.waitUntilVolumesUp(1, headers: credentials)
        let users = cluster.root + "/s3-users"
        try Data("\(Self.accessKey) \(Self.secretKey) read,write\n".utf8).write(to: URL(fileURLWithPath: users))
        return (cluster, try cluster.startGateway(extra: ["--secret-file", secret, "--auth-file", users]))
    }

    // MARK: Signing by hand, for what no client library sends

    /// Signature V4 headers for a request with `headers` (Host included): every header given
    /// is signed. With `dateHeader`, the time goes in `Date` (in that form) and no
    /// x-amz-date is sent. Returns the headers and the signing facts for chunk signatures.
    static func signV4(_ method: String, _ path: String, _ headers: [(String, String)], payloadHash: String,
                       date: Date = Date(), dateHeader: String? = nil) throws
        -> (headers: [(String, String)], key: [UInt8], timestamp: String, scope: SignatureV4.Scope, signature: String) {
        let timestamp = SignatureV4.timestamp(date)
        var all = headers + [("x-amz-content-sha256", payloadHash)]
        all.append(dateHeader.map { ("Date", $0) } ?? ("x-amz-date", timestamp))
        let names = all.map { $0.0.lowercased() }.sorted()
        let scope = SignatureV4.Scope(accessKey: accessKey, date: String(timestamp.prefix(8)), region: "us-east-1")
        let target = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let canonical = try SignatureV4.canonicalRequest(method: method, path: target[0], query: QueryParameters(target.dropFirst().first),
                                                         headers: HTTPHeaders(all), signedHeaders: names, payloadHash: payloadHash)
        let key = SignatureV4.signingKey(secret: secretKey, scope: scope)
        let signature = SignatureV4.signature(signingKey: key, stringToSign: SignatureV4.stringToSign(timestamp: timestamp, scope: scope,
                                                                                                       canonicalRequest: canonical))
        all.append(("Authorization", "\(SignatureV4.algorithm) Credential=\(accessKey)/\(scope.date)/us-east-1/s3/aws4_request, "
                    + "SignedHeaders=\(names.joined(separator: ";")), Signature=\(signature)"))
        return (all, key, timestamp, scope, signature)
    }

    /// Sends `pieces` on one connection, pausing `pause` seconds after each, and returns the
    /// status and body of the answer (the request asks for `Connection: close`).
    static func sendInPieces(_ port: Int, _ pieces: [[UInt8]], pause: Double = 0.05) throws -> (status: Int, text: String) {
        let socket = try HTTPClient.connect(HTTPURL("http://127.0.0.1:\(port)")!, timeout: 10)
        defer { socket.close() }
        for piece in pieces {
            try socket.write(piece)
            usleep(UInt32(pause * 1_000_000))
        }
        socket.setReceiveTimeout(10)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while let count = try? buffer.withUnsafeMutableBytes({ try socket.read(into: $0) }), count > 0 { received += buffer[0..<count] }
        let text = String(decoding: received, as: UTF8.self)
        let status = text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        return (status, text)
    }

    static func head(_ method: String, _ path: String, _ headers: [(String, String)]) -> [UInt8] {
        Array(("\(method) \(path) HTTP/1.1\r\n" + headers.map { "\($0.0): \($0.1)\r\n" }.joined() + "Connection: close\r\n\r\n").utf8)
    }

    private func signedSend(_ port: Int, _ method: String, _ path: String, body: [UInt8] = [], headers: [(String, String)] = [])
        throws -> HTTP.Answer {
        let signed = try Self.signV4(method, path, [("Host", "127.0.0.1:\(port)")] + headers, payloadHash: SHA256.hex(body))
        // The client adds Host itself (signed above with the same value).
        return try HTTP.send(method, "http://127.0.0.1:\(port)\(path)", body: body, headers: signed.headers.filter { $0.0 != "Host" })
    }

    // MARK: 1. aws-chunked bodies in pieces

    /// A client that pauses after each chunk's data (and inside the framing lines): the
    /// gateway's reads then end exactly where a chunk's data does, which broke its framing
    /// parser (`aws-chunked framing line too long`, `IncompleteBody`). Signed chunks and the
    /// unsigned-trailer form both.
    func testAwsChunkedUploadThatPausesAfterEachChunksDataSucceeds() throws {
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        XCTAssertEqual(try signedSend(port, "PUT", "/chunky").status, 200)
        let object = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let chunkSizes = [1024, 1024, 952]

        for trailer in [false, true] {
            let path = "/chunky/" + (trailer ? "trailer" : "signed")
            var framed: [[UInt8]] = [] // the pieces the client sends, each followed by a pause
            var headers = [("Host", "127.0.0.1:\(port)"), ("Content-Encoding", "aws-chunked"),
                           ("x-amz-decoded-content-length", String(object.count))]
            var crc = CRC32()
            object.withUnsafeBytes { crc.update($0) }
            let value = crc.value
            let checksum = Data([UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)])
                .base64EncodedString()
            if trailer { headers.append(("x-amz-trailer", "x-amz-checksum-crc32")) }
            // Content-Length is the framed length: computed from a first framing pass.
            func frame(seed: String, signing: (key: [UInt8], timestamp: String, scope: SignatureV4.Scope)?) -> [[UInt8]] {
                var pieces: [[UInt8]] = []
                var previous = seed
                var start = 0
                for size in chunkSizes + [0] {
                    let chunk = Array(object[start..<(start + size)])
                    start += size
                    var line = String(size, radix: 16)
                    if let signing {
                        previous = chunk.withUnsafeBytes {
                            SignatureV4.chunkSignature(signingKey: signing.key, timestamp: signing.timestamp, scope: signing.scope,
                                                       previous: previous, chunk: $0)
                        }
                        line += ";chunk-signature=\(previous)"
                    }
                    let bytes = Array((line + "\r\n").utf8)
                    // Half a size line, the rest of it with the data, then its CRLF alone.
                    pieces.append(Array(bytes[..<(bytes.count / 2)]))
                    pieces.append(Array(bytes[(bytes.count / 2)...]) + chunk)
                    if size > 0 { pieces.append(Array("\r\n".utf8)) }
                }
                pieces.append(Array(((trailer ? "x-amz-checksum-crc32:\(checksum)\r\n" : "") + "\r\n").utf8))
                return pieces
            }
            let length = frame(seed: String(repeating: "0", count: 64), signing: trailer ? nil : ([], "", SignatureV4.Scope(accessKey: "", date: "", region: "")))
                .reduce(0) { $0 + $1.count }
            headers.append(("Content-Length", String(length)))
            let payload = trailer ? SignatureV4.streamingUnsignedTrailer : SignatureV4.streamingPayload
            let signed = try Self.signV4("PUT", path, headers, payloadHash: payload)
            framed = frame(seed: signed.signature, signing: trailer ? nil : (signed.key, signed.timestamp, signed.scope))
            XCTAssertEqual(framed.reduce(0) { $0 + $1.count }, length)
            let answer = try Self.sendInPieces(port, [Self.head("PUT", path, signed.headers)] + framed)
            XCTAssertEqual(answer.status, 200, "\(path): \(answer.text)")
            XCTAssertEqual(try signedSend(port, "GET", path).body, object, path)
        }
    }

    // MARK: 2. Signature V2 dates, and the dates of Signature V4

    /// s3cmd --signature-v2 dates its requests `Sun, 06 Dec 2026 10:02:46 +0000`, which was
    /// taken for a skewed clock: put, get, ls and del with it against a gateway with
    /// `--auth-file`.
    func testS3cmdWithSignatureV2() throws {
        try requireTool("s3cmd", ["--version"])
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        let config = cluster.root + "/s3cfg"
        try Data("""
            [default]
            access_key = \(Self.accessKey)
            secret_key = \(Self.secretKey)
            host_base = 127.0.0.1:\(port)
            host_bucket = 127.0.0.1:\(port)
            use_https = False
            signature_v2 = True
            bucket_location = us-east-1

            """.utf8).write(to: URL(fileURLWithPath: config))
        let original = cluster.root + "/hello.txt", copy = cluster.root + "/hello-back.txt"
        try Data("hello from s3cmd, signed the old way\n".utf8).write(to: URL(fileURLWithPath: original))
        func s3cmd(_ arguments: [String]) throws -> String {
            let (status, output) = try runTool("s3cmd", ["-c", config, "--signature-v2", "--no-progress"] + arguments)
            XCTAssertEqual(status, 0, "s3cmd \(arguments.joined(separator: " ")):\n\(output)")
            return output
        }
        _ = try s3cmd(["mb", "s3://v2-bucket"])
        _ = try s3cmd(["put", original, "s3://v2-bucket/hello.txt"])
        _ = try s3cmd(["get", "--force", "s3://v2-bucket/hello.txt", copy])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: original)))
        XCTAssertTrue(try s3cmd(["ls", "s3://v2-bucket"]).contains("s3://v2-bucket/hello.txt"))
        _ = try s3cmd(["del", "s3://v2-bucket/hello.txt"])
        XCTAssertFalse(try s3cmd(["ls", "s3://v2-bucket"]).contains("hello.txt"))

        // A date that is no date is refused as such, never as a skew; V2 and V4 alike.
        let base = "http://127.0.0.1:\(port)"
        let undated = try HTTP.send("GET", base + "/v2-bucket", headers: [("Date", "yesterday"), ("Authorization", "AWS \(Self.accessKey):c2lnbmF0dXJl")])
        XCTAssertEqual(undated.status, 403)
        XCTAssertTrue(undated.text.contains("<Code>AccessDenied</Code>") && undated.text.contains("requires a valid Date"), undated.text)
        var badV4 = try Self.signV4("GET", "/v2-bucket", [("Host", "127.0.0.1:\(port)")], payloadHash: SHA256.hex([])).headers
        badV4 = badV4.filter { $0.0 != "Host" }.map { $0.0 == "x-amz-date" ? ($0.0, "20261306T250000Z") : $0 }
        let badAnswer = try HTTP.send("GET", base + "/v2-bucket", headers: badV4)
        XCTAssertEqual(badAnswer.status, 403)
        XCTAssertTrue(badAnswer.text.contains("<Code>AccessDenied</Code>") && badAnswer.text.contains("requires a valid Date"), badAnswer.text)
    }

    /// Signature V4 signs with `Date` when there is no x-amz-date, in any HTTP date form.
    func testSignatureV4WithDateAndNoAmzDate() throws {
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        XCTAssertEqual(try signedSend(port, "PUT", "/dated").status, 200)
        let now = Date()
        let imf = HTTPDate.format(Int(now.timeIntervalSince1970))
        for (form, date) in [("GMT", imf), ("+0000", imf.replacingOccurrences(of: " GMT", with: " +0000"))] {
            let body = Array("signed with Date \(form)".utf8)
            let signed = try Self.signV4("PUT", "/dated/object", [("Host", "127.0.0.1:\(port)")], payloadHash: SHA256.hex(body),
                                         date: now, dateHeader: date)
            XCTAssertFalse(signed.headers.contains { $0.0 == "x-amz-date" })
            let answer = try HTTP.send("PUT", "http://127.0.0.1:\(port)/dated/object", body: body, headers: signed.headers.filter { $0.0 != "Host" })
            XCTAssertEqual(answer.status, 200, "Date in the \(form) form: \(answer.text)")
            XCTAssertEqual(try signedSend(port, "GET", "/dated/object").body, body)
        }
    }

    // MARK: 15b. V2 presigned URLs end within seven days

    func testSignatureV2PresignedURLsExpireWithinSevenDays() throws {
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        XCTAssertEqual(try signedSend(port, "PUT", "/presigned").status, 200)
        XCTAssertEqual(try signedSend(port, "PUT", "/presigned/k", body: Array("v".utf8)).status, 200)
        func presigned(expiresIn seconds: Int) -> String {
            let expires = Int(Date().timeIntervalSince1970) + seconds
            let code = HMACSHA256.sha1Code(key: Array(Self.secretKey.utf8), message: Array("GET\n\n\n\(expires)\n/presigned/k".utf8))
            let signature = SignatureV4.uriEncode(Array(Data(code).base64EncodedString().utf8), keepSlash: false)
            return "http://127.0.0.1:\(port)/presigned/k?AWSAccessKeyId=\(Self.accessKey)&Expires=\(expires)&Signature=\(signature)"
        }
        XCTAssertEqual(try HTTP.send("GET", presigned(expiresIn: 3600)).text, "v")
        XCTAssertEqual(try HTTP.send("GET", presigned(expiresIn: 7 * 86400 - 60)).status, 200)
        let forever = try HTTP.send("GET", presigned(expiresIn: 70 * 365 * 86400))
        XCTAssertEqual(forever.status, 403)
        XCTAssertTrue(forever.text.contains("<Code>AccessDenied</Code>") && forever.text.contains("7 days"), forever.text)
    }

    // MARK: 5. s3-tests cases that were bugs

    /// An expectation S3 does not know is ignored, as S3 does (it was a 417).
    func testUnknownExpectationIsIgnored() throws {
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        XCTAssertEqual(try signedSend(port, "PUT", "/expecting").status, 200)
        let answer = try signedSend(port, "PUT", "/expecting/k", body: Array("v".utf8), headers: [("Expect", "200-ok")])
        XCTAssertEqual(answer.status, 200, answer.text)
        XCTAssertEqual(try signedSend(port, "GET", "/expecting/k").text, "v")
    }

    /// GetBucketLocation answers the LocationConstraint a bucket was created with; S3's
    /// empty element for us-east-1.
    func testGetBucketLocationAnswersTheBucketsRegion() throws {
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        let configuration = Array("<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>".utf8)
        XCTAssertEqual(try signedSend(port, "PUT", "/in-europe", body: configuration).status, 200)
        XCTAssertEqual(try signedSend(port, "PUT", "/in-virginia").status, 200)
        let europe = try signedSend(port, "GET", "/in-europe?location")
        XCTAssertEqual(europe.status, 200)
        XCTAssertTrue(europe.text.contains(">eu-west-1</LocationConstraint>"), europe.text)
        let virginia = try signedSend(port, "GET", "/in-virginia?location")
        XCTAssertTrue(virginia.text.contains("<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"), virginia.text)
        XCTAssertEqual(try signedSend(port, "GET", "/nowhere?location").status, 404)
        let weird = Array("<CreateBucketConfiguration><LocationConstraint>&lt;x&gt;</LocationConstraint></CreateBucketConfiguration>".utf8)
        XCTAssertEqual(try signedSend(port, "PUT", "/in-nowhere", body: weird).status, 400)
    }

    /// A key that is not UTF-8 once percent-decoded is 400 InvalidURI, not 404.
    func testUnreadableKeyIsABadRequest() throws {
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        XCTAssertEqual(try signedSend(port, "PUT", "/unreadable").status, 200)
        for method in ["GET", "PUT"] {
            let answer = try signedSend(port, method, "/unreadable/%AE%8A-")
            XCTAssertEqual(answer.status, 400, "\(method): \(answer.text)")
            XCTAssertTrue(answer.text.contains("<Code>InvalidURI</Code>") && answer.text.contains("Couldn&apos;t parse the specified URI."), answer.text)
        }
        // UTF-8 keys, controls included, are keys like any other.
        XCTAssertEqual(try signedSend(port, "PUT", "/unreadable/%C2%AE%C2%8A-", body: Array("ok".utf8)).status, 200)
        XCTAssertEqual(try signedSend(port, "GET", "/unreadable/%C2%AE%C2%8A-").text, "ok")
    }

    /// x-amz-meta-* values come back as the bytes the client sent (boto3 sends UTF-8).
    func testNonASCIIMetadataComesBackAsSent() throws {
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        XCTAssertEqual(try signedSend(port, "PUT", "/meta").status, 200)
        let value = "Hello World\u{e9} \u{65e5}\u{672c}"
        XCTAssertEqual(try signedSend(port, "PUT", "/meta/k", body: Array("v".utf8), headers: [("x-amz-meta-greeting", value)]).status, 200)
        let signed = try Self.signV4("HEAD", "/meta/k", [("Host", "127.0.0.1:\(port)")], payloadHash: SHA256.hex([]))
        let answer = try Self.sendInPieces(port, [Self.head("HEAD", "/meta/k", signed.headers)])
        XCTAssertEqual(answer.status, 200, answer.text)
        let line = answer.text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("x-amz-meta-greeting:") }
        XCTAssertEqual(line.map { Array($0.utf8) }, Array("x-amz-meta-greeting: \(value)".utf8))
    }

    // MARK: R. restic from init to restore

    /// restic (minio-go, aws-chunked uploads) against a signed gateway: init, a backup of
    /// files of many sizes in several packs, check --read-data, restore; the restored files
    /// are the originals, and restic never had to retry an upload (a retry is how the
    /// aws-chunked framing bug showed: "Save(<data/...>) returned error, retrying").
    func testResticInitBackupCheckRestore() throws {
        try requireTool("restic", ["version"])
        let (cluster, port) = try signedGateway()
        defer { cluster.shutdown() }
        let source = cluster.root + "/source", target = cluster.root + "/restored"
        try FileManager.default.createDirectory(atPath: source + "/nested/deeper", withIntermediateDirectories: true)
        let random = try XCTUnwrap(FileHandle(forReadingAtPath: "/dev/urandom"))
        defer { random.closeFile() }
        let sizes = [0, 1, 100, 4095, 4096, 65_537, 300_000, 1 << 20, 3 << 20, (5 << 20) + 123, 2 << 20]
        var files: [String] = []
        for (index, size) in sizes.enumerated() {
            let path = source + (index % 3 == 0 ? "/nested" : index % 3 == 1 ? "/nested/deeper" : "") + "/file-\(index)"
            try random.readData(ofLength: size).write(to: URL(fileURLWithPath: path))
            files.append(path)
        }
        let environment = ["RESTIC_REPOSITORY=s3:http://127.0.0.1:\(port)/restic-bucket", "RESTIC_PASSWORD=outsider-restic",
                           "AWS_ACCESS_KEY_ID=\(Self.accessKey)", "AWS_SECRET_ACCESS_KEY=\(Self.secretKey)",
                           "RESTIC_CACHE_DIR=\(cluster.root)/restic-cache", "HOME=\(cluster.root)"]
        var transcript = ""
        func restic(_ arguments: [String]) throws {
            let (status, output) = try runTool("env", environment + ["restic"] + arguments)
            transcript += "$ restic \(arguments.joined(separator: " "))\n\(output)\n"
            // A failed step leaves nothing for the next ones to check.
            guard status == 0 else {
                throw ClusterError("restic \(arguments.joined(separator: " ")) exited \(status):\n\(output)\nlogs:\n\(cluster.logText().suffix(4000))")
            }
        }
        try restic(["init"])
        // 4 MiB packs (restic's smallest) so that the 11 MiB of data takes several.
        try restic(["backup", "--pack-size", "4", source])
        try restic(["check", "--read-data"])
        try restic(["restore", "latest", "--target", target])
        for path in files {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: target + path)), try Data(contentsOf: URL(fileURLWithPath: path)), path)
        }
        let packs = try HTTP.send("GET", cluster.masterURL + "/store/?prefix=restic-bucket/data/",
                                  headers: [("Authorization", "Basic " + Data("root:rootpass".utf8).base64EncodedString())])
        XCTAssertGreaterThan(packs.text.components(separatedBy: "restic-bucket/data/").count - 1, 2, packs.text)
        for sign in ["retrying", "returned error", "Save("] {
            XCTAssertFalse(transcript.contains(sign), "restic retried an upload:\n\(transcript)")
        }
    }
}
