import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// Issue 21's findings about the shared HTTP server, against the real daemons: the access
/// log, reason phrases, idle keep-alive sockets that locked every client out, log lines
/// forged by keys, and Basic auth guessed at full speed.
final class OutsiderHTTPTests: XCTestCase {
    static let users = "root rootpass read,write,admin\nreader readpass read\n"

    private func basic(_ user: String, _ password: String) -> [(String, String)] {
        [("Authorization", "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())]
    }

    /// A cluster of one volume and a master with client credentials (`users`).
    private func securedCluster(masterExtra: [String] = [], volumeExtra: [String] = []) throws -> TestCluster {
        let cluster = try TestCluster()
        let authPath = cluster.root + "/users"
        try Data(Self.users.utf8).write(to: URL(fileURLWithPath: authPath))
        let port = try cluster.startVolume(extra: volumeExtra)
        try cluster.startMaster(volumePorts: [port], extra: ["--auth-file", authPath] + masterExtra)
        return cluster
    }

    /// A TCP connection to `port` on 127.0.0.1 from `source` (bound before connecting, so
    /// the daemon sees another client address), or nil if it could not be made.
    private func connect(_ port: Int, from source: String = "127.0.0.1") -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        var remote = local
        remote.sin_addr.s_addr = inet_addr("127.0.0.1")
        remote.sin_port = in_port_t(UInt16(port).bigEndian)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, connected == 0 else {
            close(fd)
            return nil
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Sends `request` on `fd` and reads one answer (head, and a body of Content-Length);
    /// returns the head's text, or nil if the connection failed or closed first.
    @discardableResult
    private func exchange(_ fd: Int32, _ request: String) -> String? {
        let bytes = Array(request.utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else { return nil }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let text = String(decoding: received, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n") {
                let head = String(text[..<end.lowerBound])
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if received.count >= text.utf8.distance(from: text.startIndex, to: end.upperBound) + length { return head }
            }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return nil }
            received += buffer[0..<count]
        }
    }

    /// The status line of one request on a fresh connection from `source`.
    private func statusLine(_ port: Int, _ request: String, from source: String = "127.0.0.1") -> String? {
        guard let fd = connect(port, from: source) else { return nil }
        defer { close(fd) }
        return exchange(fd, request)?.components(separatedBy: "\r\n").first
    }

    private func logLines(_ cluster: TestCluster, containing text: String) -> [String] {
        cluster.logText().split(separator: "\n").map(String.init).filter { $0.contains(text) }
    }

    // MARK: - Item 4: reason phrases

    func testEveryStatusWeSendHasItsReasonPhrase() throws {
        let cluster = try securedCluster()
        defer { cluster.shutdown() }
        let port = cluster.masterPort
        let reader = basic("reader", "readpass")[0].1, root = basic("root", "rootpass")[0].1
        XCTAssertEqual(statusLine(port, "GET /store/k HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 401 Unauthorized")
        XCTAssertEqual(statusLine(port, "PUT /store/k HTTP/1.1\r\nHost: x\r\nAuthorization: \(reader)\r\nContent-Length: 1\r\n\r\nx"),
                       "HTTP/1.1 403 Forbidden")
        XCTAssertEqual(statusLine(port, "GET /store/no-such-key HTTP/1.1\r\nHost: x\r\nAuthorization: \(root)\r\n\r\n"),
                       "HTTP/1.1 404 Not Found")
        XCTAssertEqual(statusLine(port, "GET /health HTTP/1.1\r\n\r\n"), "HTTP/1.1 400 Bad Request")
        // Those the daemons send in rarer cases, and the WebDAV and rate-limit ones S3 uses.
        let expected = [207: "Multi-Status", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
                        422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
                        501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
                        505: "HTTP Version Not Supported", 507: "Insufficient Storage"]
        for (status, phrase) in expected { XCTAssertEqual(HTTPResponse.reason(status), phrase) }
        XCTAssertEqual(HTTPResponse.reason(499), "Client Error", "an unknown status gets its class's phrase")
    }

    // MARK: - Item 3: the access log

    /// Refused (401, 403, 404, 400) and successful requests, per `--access-log` mode, on the
    /// master (the Basic user named) and on the S3 gateway (the access key named).
    func testAccessLogNamesRefusedAndServedRequestsPerMode() throws {
        for mode in ["errors", "all", "off"] {
            let flags = mode == "errors" ? [] : ["--access-log", mode] // errors: the default
            let cluster = try securedCluster(masterExtra: flags, volumeExtra: flags)
            defer { cluster.shutdown() }
            let base = cluster.masterURL
            XCTAssertEqual(try HTTP.send("PUT", base + "/store/refused", body: Array("x".utf8), headers: basic("reader", "readpass")
                                         + [("X-Request-Id", "rid-of-the-403")]).status, 403)
            XCTAssertEqual(try HTTP.send("GET", base + "/store/missing", headers: basic("reader", "readpass")).status, 404)
            XCTAssertEqual(try HTTP.send("GET", base + "/store/missing").status, 401)
            XCTAssertEqual(statusLine(cluster.masterPort, "GET /health HTTP/1.1\r\n\r\n"), "HTTP/1.1 400 Bad Request")
            XCTAssertEqual(try HTTP.send("GET", base + "/admin/volumes", headers: basic("root", "rootpass")).status, 200)
            // A volume runs the same server: its refusals are logged alike.
            XCTAssertEqual(try HTTP.send("GET", cluster.volumeURL(cluster.volumePorts[0]) + "/no-such-endpoint").status, 404)
            // Each line is written just after its answer is sent.
            try waitUntil("the lines are written", timeout: 3) {
                !logLines(cluster, containing: "GET /no-such-endpoint 404").isEmpty
                    && (mode != "all" || !logLines(cluster, containing: "GET /admin/volumes 200").isEmpty)
            }
            let forbidden = logLines(cluster, containing: "PUT /store/refused 403")
            let missing = logLines(cluster, containing: "GET /store/missing 404")
            let unauthenticated = logLines(cluster, containing: "GET /store/missing 401")
            let malformed = logLines(cluster, containing: "- - 400")
            let served = logLines(cluster, containing: "GET /admin/volumes 200")
            let volumeRefusal = logLines(cluster, containing: "GET /no-such-endpoint 404")
            XCTAssertEqual(volumeRefusal.count, 1, "\(volumeRefusal)")
            XCTAssertTrue(volumeRefusal.first?.contains("volume info: ") ?? false, "\(volumeRefusal)")
            XCTAssertTrue(volumeRefusal.first?.contains("no such endpoint") ?? false, "\(volumeRefusal)")
            switch mode {
            case "off":
                XCTAssertTrue(logLines(cluster, containing: "info: access ").isEmpty, "no access lines when off")
                XCTAssertTrue(served.isEmpty)
                // The reasons of refusals are logged at info all the same.
                XCTAssertEqual(forbidden.count, 1)
                XCTAssertTrue(forbidden.first?.contains("info: refused PUT /store/refused 403") ?? false, "\(forbidden)")
                XCTAssertTrue(forbidden.first?.contains("reason=\"reader lacks the 'write' right\"") ?? false, "\(forbidden)")
                XCTAssertEqual(missing.count, 1)
                XCTAssertEqual(malformed.count, 1)
            default:
                XCTAssertEqual(forbidden.count, 1, "\(forbidden)")
                let line = forbidden.first ?? ""
                for field in ["info: access PUT /store/refused 403", "user=reader", "peer=127.0.0.1", "rid=rid-of-the-403",
                              "reason=\"reader lacks the 'write' right\"", "sent=", "ms="] {
                    XCTAssertTrue(line.contains(field), "\(field) in \(line)")
                }
                XCTAssertEqual(missing.count, 1)
                XCTAssertTrue(missing.first?.contains("user=reader") ?? false, "\(missing)")
                XCTAssertEqual(unauthenticated.count, 1)
                XCTAssertTrue(unauthenticated.first?.contains("user=-") ?? false, "\(unauthenticated)")
                XCTAssertEqual(malformed.count, 1)
                XCTAssertTrue(malformed.first?.contains("an HTTP/1.1 request needs a Host header") ?? false, "\(malformed)")
                if mode == "all" {
                    XCTAssertEqual(served.count, 1)
                    XCTAssertTrue(served.first?.contains("user=root") ?? false, "\(served)")
                    XCTAssertFalse(served.first?.contains("reason=") ?? true, "a success has no reason")
                } else {
                    XCTAssertTrue(served.isEmpty, "errors mode logs no success: \(served)")
                }
            }
        }
    }

    /// The user a request authenticated as is kept per connection, not per request: the next
    /// request on the same keep-alive connection must not be logged as that user.
    func testNextRequestOnAConnectionIsNotLoggedAsThePreviousUser() throws {
        let cluster = try securedCluster()
        defer { cluster.shutdown() }
        let socket = try HTTPClient.connect(HTTPURL(cluster.masterURL)!, timeout: 5)
        defer { socket.close() }
        let reader = basic("reader", "readpass")[0].1
        try socket.write(Array(("GET /store/kept-user HTTP/1.1\r\nHost: x\r\nAuthorization: \(reader)\r\n\r\n"
                                + "GET /no-such-endpoint/after-reader HTTP/1.1\r\nHost: x\r\n\r\n").utf8))
        var text = ""
        while text.components(separatedBy: "HTTP/1.1 404").count < 3 {
            guard try socket.fill() else { break }
            text += String(decoding: socket.buffered, as: UTF8.self)
            socket.consume(socket.bufferedCount)
        }
        try waitUntil("both lines are written", timeout: 3) {
            !logLines(cluster, containing: "GET /no-such-endpoint/after-reader 404").isEmpty
        }
        XCTAssertTrue(logLines(cluster, containing: "GET /store/kept-user 404").first?.contains("user=reader") ?? false)
        let after = logLines(cluster, containing: "GET /no-such-endpoint/after-reader 404")
        XCTAssertTrue(after.first?.contains("user=-") ?? false, "\(after)")
    }

    /// A flood of 404s with long paths used to write a line per answer, each as long as the
    /// path, from the event loop: now a line keeps 256 bytes of client text, lines about
    /// failures are limited to 300 a second, and what was dropped is counted in the log.
    func testAFloodOf404sCannotFloodTheLog() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let path = "/no-such-endpoint/" + String(repeating: "%01", count: 2_000)
        let socket = try HTTPClient.connect(HTTPURL(cluster.volumeURL(cluster.volumePorts[0]))!, timeout: 5)
        defer { socket.close() }
        let batch = Array(String(repeating: "GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n", count: 100).utf8)
        let marker = Array("HTTP/1.1 404".utf8)
        let started = monotonicSeconds()
        var answered = 0
        for _ in 0..<20 {
            try socket.write(batch)
            var seen = 0
            while seen < 100 {
                guard try socket.fill() else { throw ClusterError("the volume closed the connection") }
                let bytes = Array(socket.buffered)
                var index = 0
                while index + marker.count <= bytes.count {
                    if bytes[index..<index + marker.count].elementsEqual(marker) { seen += 1; index += marker.count } else { index += 1 }
                }
                // Keep a possible partial marker for the next read.
                socket.consume(max(0, bytes.count - marker.count + 1))
            }
            answered += seen
        }
        let seconds = monotonicSeconds() - started
        XCTAssertEqual(answered, 2_000)
        // A summary comes once the second it covers is over: wait for every second's.
        var lines: [String] = [], dropped = 0
        try? waitUntil("every 404 is logged or counted", timeout: 5) {
            lines = logLines(cluster, containing: "GET /no-such-endpoint/")
            dropped = logLines(cluster, containing: "access-log line(s) suppressed").compactMap { line in
                let words = line.split(separator: " ")
                return words.firstIndex(of: "access-log").flatMap { Int(words[$0 - 1]) }
            }.reduce(0, +)
            return dropped + lines.count >= 2_000
        }
        print("OutsiderHTTPTests: 2,000 404s in \(String(format: "%.2f", seconds)) s, \(lines.count) access lines, \(dropped) counted as dropped")
        XCTAssertGreaterThan(dropped, 0, "the dropped lines are counted")
        XCTAssertEqual(dropped + lines.count, 2_000, "every 404 is either logged or counted")
        XCTAssertLessThanOrEqual(lines.count, 300 * (Int(seconds) + 2), "at most 300 lines a second")
        XCTAssertTrue(lines.allSatisfy { $0.utf8.count < 1_000 && $0.contains("…(6018 bytes)") }, "\(lines.first ?? "")")
    }

    /// The gateway used to log nothing about a refused request: now a wrong signature is an
    /// access line naming the access key, the S3 error code and the request id.
    func testGatewayLogsRefusedSignaturesWithTheAccessKey() throws {
        let cluster = try TestCluster.started(volumes: 1)
        defer { cluster.shutdown() }
        let users = cluster.root + "/s3users"
        try Data("s3user s3secret read,write\n".utf8).write(to: URL(fileURLWithPath: users))
        let gateway = try cluster.startGateway(extra: ["--auth-file", users, "--access-log", "all"])
        func curl(_ secret: String, _ path: String) throws -> String {
            try Self.signedCurl(gateway, secret: secret, path: path)
        }
        XCTAssertEqual(try curl("wrong", "/bucket-a"), "403")
        XCTAssertEqual(try curl("s3secret", "/"), "200")
        try waitUntil("the lines are written", timeout: 3) { !logLines(cluster, containing: "access GET / 200").isEmpty }
        let refused = logLines(cluster, containing: "access GET /bucket-a 403")
        XCTAssertEqual(refused.count, 1, "\(refused)")
        for field in ["user=s3user", "reason=\"SignatureDoesNotMatch: ", "peer=127.0.0.1"] {
            XCTAssertTrue(refused.first?.contains(field) ?? false, "\(field) in \(refused)")
        }
        XCTAssertFalse(refused.first?.contains("rid=-") ?? true, "the x-amz-request-id is named")
        XCTAssertEqual(logLines(cluster, containing: "access GET / 200").filter { $0.contains("user=s3user") }.count, 1)
        XCTAssertFalse(cluster.logText().contains("s3secret"), "no secret in a log")
    }

    /// curl signs S3 requests itself (Signature V4); the payload header it leaves out.
    static func signedCurl(_ gateway: Int, secret: String, path: String, from source: String = "127.0.0.1") throws -> String {
        try runTool("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", source,
                                      "--aws-sigv4", "aws:amz:us-east-1:s3", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                                      "--user", "s3user:\(secret)", "http://127.0.0.1:\(gateway)\(path)"]).output
    }

    // MARK: - Item 15a: client text cannot forge log lines

    func testKeyWithALineBreakCannotForgeALogLine() throws {
        let cluster = try securedCluster(masterExtra: ["--log-level", "debug", "--access-log", "all"])
        defer { cluster.shutdown() }
        let forged = "2026-12-06T00:00:00.000Z master error: forged"
        let encoded = "a%0A" + forged.replacingOccurrences(of: " ", with: "%20") + "%1B%5B2J"
        let put = try HTTP.follow("PUT", cluster.masterURL + "/store/" + encoded, body: Array("v".utf8),
                                  headers: basic("root", "rootpass"))
        XCTAssertEqual(put.status, 201, put.text)
        // A user name with a line break, in a failed login (the name ends at the first colon).
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/x", headers: basic("eve\nforged", "guess")).status, 401)
        try waitUntil("the login failure is logged", timeout: 3) { !logLines(cluster, containing: "authentication failed").isEmpty }
        let lines = cluster.logText().split(separator: "\n")
        XCTAssertFalse(lines.contains { $0.hasPrefix(forged) }, "a client forged a log line")
        XCTAssertFalse(cluster.logText().contains("\u{1B}"), "an escape sequence reached the log")
        XCTAssertTrue(lines.contains { $0.contains("PUT redirected") && $0.contains("key=a\\n" + forged + "\\x1B[2J") },
                      "the key is logged escaped")
        XCTAssertTrue(lines.contains { $0.contains("authentication failed") && $0.contains("user=eve\\nforged") },
                      "the user name is logged escaped")
    }

    // MARK: - Item 15c: guessing passwords

    /// A burst of wrong passwords from one address is logged and limited (429 with
    /// Retry-After); a correct user from another address still gets in, and no secret is logged.
    func testBurstOfWrongPasswordsIsLoggedAndLimitedPerAddress() throws {
        let cluster = try securedCluster()
        defer { cluster.shutdown() }
        let port = cluster.masterPort
        func request(_ user: String, _ password: String) -> String {
            "GET /admin/volumes HTTP/1.1\r\nHost: x\r\nAuthorization: \(basic(user, password)[0].1)\r\n\r\n"
        }
        var statuses: [String] = []
        for attempt in 0..<30 {
            statuses.append(statusLine(port, request("root", "guess-\(attempt)"), from: "127.0.0.2") ?? "failed")
        }
        XCTAssertEqual(statuses.prefix(10).filter { $0 == "HTTP/1.1 401 Unauthorized" }.count, 10, "\(statuses)")
        XCTAssertEqual(statuses.suffix(15).filter { $0 == "HTTP/1.1 429 Too Many Requests" }.count, 15, "\(statuses)")
        // The right password from the limited address waits too; from another it is served.
        guard let fd = connect(port, from: "127.0.0.2") else { return XCTFail("no connection") }
        defer { close(fd) }
        let limited = exchange(fd, request("root", "rootpass")) ?? ""
        XCTAssertTrue(limited.hasPrefix("HTTP/1.1 429"), limited)
        XCTAssertTrue(limited.contains("Retry-After: "), limited)
        XCTAssertEqual(statusLine(port, request("root", "rootpass")), "HTTP/1.1 200 OK")
        try waitUntil("failures logged", timeout: 3) { logLines(cluster, containing: "authentication failed").count >= 10 }
        let failures = logLines(cluster, containing: "authentication failed")
        XCTAssertLessThanOrEqual(failures.count, 12, "limited guesses are not even checked")
        XCTAssertTrue(failures.allSatisfy { $0.contains("user=root") && $0.contains("peer=127.0.0.2") }, "\(failures)")
        XCTAssertFalse(cluster.logText().contains("guess-"), "a guessed secret reached the log")
        XCTAssertFalse(cluster.logText().contains("rootpass"))

        // The gateway limits wrong signatures the same way (S3's 503 SlowDown); on an open cluster.
        let open = try TestCluster.started(volumes: 1)
        defer { open.shutdown() }
        let users = open.root + "/s3users"
        try Data("s3user s3secret read,write\n".utf8).write(to: URL(fileURLWithPath: users))
        let gateway = try open.startGateway(extra: ["--auth-file", users])
        let signed = try (0..<14).map { _ in try Self.signedCurl(gateway, secret: "wrong", path: "/", from: "127.0.0.2") }
        XCTAssertEqual(signed.prefix(10), Array(repeating: "403", count: 10)[...], "\(signed)")
        XCTAssertEqual(signed.suffix(3), Array(repeating: "503", count: 3)[...], "\(signed)")
        XCTAssertEqual(try Self.signedCurl(gateway, secret: "s3secret", path: "/"), "200")
    }

    // MARK: - Item 8: idle keep-alive sockets

    /// Opens `count` connections from `source` that each do `GET /health` and stay open;
    /// returns them and how many were answered 200.
    private func idleSockets(_ count: Int, to port: Int, from source: String) -> (fds: [Int32], served: Int) {
        var fds: [Int32] = []
        var served = 0
        for _ in 0..<count {
            guard let fd = connect(port, from: source) else { continue }
            fds.append(fd)
            if exchange(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")?.hasPrefix("HTTP/1.1 200") == true { served += 1 }
        }
        return (fds, served)
    }

    /// How many of `fds` the daemon still holds open (not closed by it).
    private func stillOpen(_ fds: [Int32]) -> Int {
        fds.filter { fd in
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 0) == 1 else { return true }
            var byte: UInt8 = 0
            return recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) > 0
        }.count
    }

    /// 90 PUT/GET cycles of a real client through the master, all of which must succeed;
    /// returns how many did.
    @discardableResult
    private func realClientCycles(_ cluster: TestCluster, _ label: String) throws -> Int {
        var failures: [String] = []
        for cycle in 0..<45 {
            let put = try HTTP.follow("PUT", cluster.masterURL + "/store/\(label)-\(cycle)", body: Array("value \(cycle)".utf8))
            if put.status != 201 { failures.append("PUT \(put.status) \(put.text)") }
            let get = try HTTP.follow("GET", cluster.masterURL + "/store/\(label)-\(cycle)")
            if get.status != 200 || get.text != "value \(cycle)" { failures.append("GET \(get.status) \(get.text)") }
        }
        XCTAssertEqual(failures, [], "\(label): every real client got through")
        return 90 - failures.count
    }

    /// 1,100 connections that did `GET /health` and stay open used to hold every slot of the
    /// master and of a volume (90 of 90 real clients got 503). From another address, the
    /// per-address cap bounds what they hold; from the clients' own address (the cap out of
    /// the way), a full table evicts the longest-idle of them. Either way clients get in.
    func testIdleKeepAliveSocketsCannotLockClientsOut() throws {
        // 1,100 sockets at a time here: the soft open-file limit (often 1,024) is raised to the hard one.
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        if getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(resource, &limit)
        }
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur >= 1_300 else {
            throw XCTSkip("the open-file limit (\(limit.rlim_cur)) is too low for 1,100 sockets")
        }
        for sameAddress in [false, true] {
            let uncapped = sameAddress ? ["--max-connections-per-address", "1000000"] : []
            let cluster = try TestCluster.started(volumes: 1, masterExtra: uncapped, volumeExtra: uncapped)
            defer { cluster.shutdown() }
            let attacker = sameAddress ? "127.0.0.1" : "127.0.0.2"
            for (daemon, port) in [("master", cluster.masterPort), ("volume", cluster.volumePorts[0])] {
                let (fds, served) = idleSockets(1100, to: port, from: attacker)
                defer { fds.forEach { close($0) } }
                XCTAssertEqual(fds.count, 1100)
                XCTAssertEqual(served, 1100, "\(daemon): each new connection evicts an idle one instead of getting 503")
                let succeeded = try realClientCycles(cluster, "\(daemon)-\(sameAddress ? "same" : "other")")
                let held = stillOpen(fds)
                print("OutsiderHTTPTests: \(daemon), attacker from \(attacker): \(held) of 1100 idle sockets held open "
                      + "while \(succeeded) of 90 real requests succeeded")
                if sameAddress {
                    XCTAssertGreaterThan(held, 900, "\(daemon): a full table evicts only as many as it needs")
                } else {
                    XCTAssertLessThanOrEqual(held, 256, "\(daemon): one address holds at most --max-connections-per-address")
                }
            }
        }
    }
}
