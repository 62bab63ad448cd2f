import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import TestSupport
import XCTest

/// The attacks of issue 11, each against real processes: forged and replayed commits,
/// tickets and internal calls, fake volumes, version replays, unauthenticated clients.
/// Every one of them succeeded before the cluster was signed; each must fail now, and
/// lose nothing. The secret must never appear in a log or an answer.
final class SecurityTests: XCTestCase {
    static let secretText = "kalavara-test-secret-\(UUID().uuidString)"

    private func basic(_ user: String, _ password: String) -> [(String, String)] {
        [("Authorization", "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())]
    }

    private func signedCluster(volumes: Int = 2, masterExtra: [String] = [], volumeExtra: [String] = [],
                               authLines: String? = nil) throws -> (TestCluster, ClusterSecret) {
        let cluster = try TestCluster()
        let secretPath = cluster.root + "/secret"
        try Data(Self.secretText.utf8).write(to: URL(fileURLWithPath: secretPath))
        cluster.volumeExtra = ["--secret-file", secretPath] + volumeExtra
        var extra = ["--secret-file", secretPath] + masterExtra
        if let authLines {
            let authPath = cluster.root + "/users"
            try Data(authLines.utf8).write(to: URL(fileURLWithPath: authPath))
            extra += ["--auth-file", authPath]
        }
        let ports = try (0..<volumes).map { _ in try cluster.startVolume() }
        try cluster.startMaster(volumePorts: ports, extra: extra)
        try cluster.waitUntilVolumesUp(volumes, headers: authLines == nil ? [] : basic("root", "rootpass"))
        return (cluster, try ClusterSecret(bytes: Array(Self.secretText.utf8)))
    }

    /// Sends a call signed with `secret` (a daemon's call), optionally dated `skew` seconds off.
    private func signedSend(_ method: String, _ url: String, secret: ClusterSecret, skew: Double = 0,
                            headers: [(String, String)] = [], body: [UInt8] = []) throws -> HTTP.Answer {
        let parsed = HTTPURL(url)!
        var fields = HTTPHeaders(headers)
        SignedCall.sign(&fields, method: method, target: parsed.pathAndQuery, body: body, length: body.count, secret: secret,
                        now: Date().timeIntervalSince1970 + skew)
        return try HTTP.send(method, url, body: body, headers: fields.fields.map { ($0.name, $0.value) })
    }

    private func assertNoSecret(_ cluster: TestCluster, _ answers: [HTTP.Answer], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(cluster.logText().contains(Self.secretText), "the secret is in a log", file: file, line: line)
        for answer in answers {
            XCTAssertFalse(answer.text.contains(Self.secretText), "the secret is in an answer", file: file, line: line)
            XCTAssertFalse(answer.headers.fields.contains { $0.value.contains(Self.secretText) }, file: file, line: line)
        }
    }

    // MARK: - Internal calls

    func testForgedInternalCallsAreRefusedAndChangeNothing() throws {
        let (cluster, _) = try signedCluster(volumes: 1)
        XCTAssertEqual(try cluster.put("k", "genuine").status, 201)
        let redirect = try HTTP.send("GET", cluster.masterURL + "/store/k")
        let version = try XCTUnwrap(PlacementTicket(QueryParameters(HTTPURL(redirect.headers["Location"]!)!
            .pathAndQuery.split(separator: "?").last))?.version)
        let volume = cluster.volumeURL(cluster.volumePorts[0])
        let wrong = try ClusterSecret(bytes: Array("not-the-cluster-secret-at-all".utf8))
        var answers: [HTTP.Answer] = []

        // Master: a commit naming another version, a delete without a DELETE, a fake holder;
        // unsigned, signed with the wrong secret, and correctly signed but stale.
        let commits = ["op=put&key=k&ver=\(version + 1)&size=3&h=\(volume)", "op=delete&key=k&ver=\(version + 1)",
                       "op=put&key=k&ver=\(version + 1)&size=3&h=http://127.0.0.1:1"]
        for query in commits {
            answers.append(try HTTP.send("POST", cluster.masterURL + "/internal/commit?" + query))
            answers.append(try signedSend("POST", cluster.masterURL + "/internal/commit?" + query, secret: wrong))
        }
        let genuine = try ClusterSecret(bytes: Array(Self.secretText.utf8))
        answers.append(try signedSend("POST", cluster.masterURL + "/internal/commit?" + commits[1], secret: genuine, skew: -120))
        for path in ["/internal/resolve?key=k&ver=\(version + 5)&h=\(volume)", "/internal/purged?key=k&ver=\(version + 5)&h=\(volume)",
                     "/internal/corrupt?key=k&ver=\(version)&h=\(volume)"] {
            answers.append(try HTTP.send("POST", cluster.masterURL + path))
        }
        answers.append(try HTTP.send("POST", cluster.masterURL + "/internal/wanted?h=\(volume)", body: Array("1 k".utf8)))
        // A correctly signed wanted call whose body was swapped: the digest no longer matches.
        var swapped = HTTPHeaders()
        SignedCall.sign(&swapped, method: "POST", target: "/internal/wanted?h=\(volume)", body: Array("1 a".utf8), length: 3,
                        secret: genuine)
        answers.append(try HTTP.send("POST", cluster.masterURL + "/internal/wanted?h=\(volume)", body: Array("1 k".utf8),
                                     headers: swapped.fields.map { ($0.name, $0.value) }))

        // Volume: wipe copies, claim outcomes, copy out, read the inventory.
        for (method, path) in [("DELETE", "/internal/replica/k?below=18446744073709551615"), ("DELETE", "/internal/replica/k?exact=\(version)"),
                               ("POST", "/internal/committed/k?ver=\(version + 1)&previous=\(version)"),
                               ("POST", "/internal/copy/k?ver=\(version)&to=http://127.0.0.1:1"), ("GET", "/internal/inventory"),
                               ("PUT", "/internal/replica/k?t=1&ver=\(version + 9)")] {
            answers.append(try HTTP.send(method, volume + path, body: method == "PUT" ? Array("evil".utf8) : []))
        }
        for answer in answers { XCTAssertEqual(answer.status, 403, answer.text) }
        XCTAssertTrue(answers.contains { $0.text.contains("stale") })
        XCTAssertTrue(answers.contains { $0.text.contains("body is not the one") })

        sleep(3) // what a removal queue or a superseded drop would have done by now
        let value = try cluster.get("k")
        XCTAssertEqual(value.status, 200)
        XCTAssertEqual(value.text, "genuine")
        XCTAssertEqual(cluster.copies(of: "k").count, 1)
        assertNoSecret(cluster, answers + [value])
    }

    // MARK: - Tickets

    func testTicketsAreBoundToOperationKeyAndExpiry() throws {
        let (cluster, _) = try signedCluster(volumes: 1, masterExtra: ["--read-ticket-lifetime", "2"])
        XCTAssertEqual(try cluster.put("a", "alpha").status, 201)
        XCTAssertEqual(try cluster.put("b", "beta").status, 201)
        let volume = cluster.volumeURL(cluster.volumePorts[0])

        // A direct read without a ticket served superseded and deleted values before.
        XCTAssertEqual(try HTTP.send("GET", volume + "/store/a").status, 403)
        let read = try XCTUnwrap(try HTTP.send("GET", cluster.masterURL + "/store/a").headers["Location"])
        XCTAssertEqual(try HTTP.send("GET", read).text, "alpha")
        XCTAssertEqual(try HTTP.send("HEAD", read).status, 200)
        // The same ticket for another key, or for a delete, is no good.
        XCTAssertEqual(try HTTP.send("GET", read.replacingOccurrences(of: "/store/a?", with: "/store/b?")).status, 403)
        XCTAssertEqual(try HTTP.send("DELETE", read).status, 403)
        // A tampered version or expiry breaks the signature.
        let query = String(read.split(separator: "?").last!)
        let parameters = try QueryParameters(Substring(query))
        let bumped = read.replacingOccurrences(of: "x=\(parameters["x"]!)", with: "x=\(UInt64(parameters["x"]!)! + 1000)")
        XCTAssertEqual(try HTTP.send("GET", bumped).status, 403)

        // A write ticket: reordered holders or another master break it; a DELETE ticket
        // whose m= names a fake master (which used to wipe copies) too.
        let putTicket = try XCTUnwrap(try HTTP.send("PUT", cluster.masterURL + "/store/c", body: Array("x".utf8)).headers["Location"])
        let forged = putTicket.replacingOccurrences(of: PercentEncoding.encode(cluster.masterURL), with: PercentEncoding.encode("http://127.0.0.1:1"))
        XCTAssertNotEqual(forged, putTicket)
        XCTAssertEqual(try HTTP.send("PUT", forged, body: Array("x".utf8)).status, 403)
        let deleteTicket = try XCTUnwrap(try HTTP.send("DELETE", cluster.masterURL + "/store/a").headers["Location"])
        let fakeDelete = deleteTicket.replacingOccurrences(of: PercentEncoding.encode(cluster.masterURL),
                                                           with: PercentEncoding.encode("http://127.0.0.1:1"))
        XCTAssertNotEqual(fakeDelete, deleteTicket)
        XCTAssertEqual(try HTTP.send("DELETE", fakeDelete).status, 403)
        XCTAssertEqual(try cluster.get("a").text, "alpha")

        // Read tickets expire (2 s here).
        sleep(3)
        let expired = try HTTP.send("GET", read)
        XCTAssertEqual(expired.status, 403)
        XCTAssertTrue(expired.text.contains("expired"), expired.text)
        XCTAssertEqual(try cluster.get("a").text, "alpha")
        assertNoSecret(cluster, [expired])
    }

    /// A replayed ticket with another body used to replace the value's bytes (201, same
    /// ETag), or with the holders reordered delete the committed file. A version is
    /// written once: the replay gets 409 and nothing is lost, signed or not.
    func testReplayedTicketCannotRewriteAVersion() throws {
        for signed in [true, false] {
            let cluster: TestCluster
            if signed {
                cluster = try signedCluster(volumes: 2, masterExtra: ["--replicas", "2"]).0
            } else {
                cluster = try TestCluster.started(volumes: 2, masterExtra: ["--replicas", "2"])
            }
            let ticket = try XCTUnwrap(try HTTP.send("PUT", cluster.masterURL + "/store/r", body: Array("first".utf8)).headers["Location"])
            XCTAssertEqual(try HTTP.send("PUT", ticket, body: Array("first".utf8)).status, 201)
            let replay = try HTTP.send("PUT", ticket, body: Array("other".utf8))
            XCTAssertEqual(replay.status, 409, replay.text)
            // The holders reversed: refused by the signature, or (open) by the copy already there.
            let parameters = try QueryParameters(Substring(ticket.split(separator: "?").last!))
            let holders = parameters["h"]!.split(separator: ",").map(String.init)
            XCTAssertTrue(ticket.contains("h=" + PercentEncoding.encode(holders.joined(separator: ","))))
            let reversed = ticket.replacingOccurrences(of: "h=" + PercentEncoding.encode(holders.joined(separator: ",")),
                                                       with: "h=" + PercentEncoding.encode(holders.reversed().joined(separator: ",")))
                .replacingOccurrences(of: holders[0] + "/store", with: holders[1] + "/store")
            XCTAssertNotEqual(reversed, ticket)
            let reorder = try HTTP.send("PUT", reversed, body: Array("third".utf8))
            XCTAssertEqual(reorder.status, signed ? 403 : 409, reorder.text)
            sleep(3)
            XCTAssertEqual(try cluster.get("r").text, "first", "signed: \(signed)")
            XCTAssertEqual(cluster.copies(of: "r").count, 2, "signed: \(signed)")
            XCTAssertEqual(Set(cluster.copyContents(of: "r").map { $0.suffix(5) }), [Data("first".utf8)])
        }
    }

    // MARK: - Registration

    func testFakeVolumesCannotJoinASignedCluster() throws {
        let (cluster, secret) = try signedCluster(volumes: 1)
        // A "volume" that answers every health check with 200, as the attack's did.
        let fake = try FakeServer()
        defer { fake.stop() }
        let add = try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(fake.url.utf8))
        XCTAssertEqual(add.status, 403, add.text)
        let heartbeat = try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(fake.url.utf8),
                                      headers: [(VolumeHeaders.heartbeat, "1")])
        XCTAssertEqual(heartbeat.status, 403, heartbeat.text)
        XCTAssertFalse(try HTTP.send("GET", cluster.masterURL + "/admin/volumes").text.contains(fake.url))
        for index in 0..<20 { XCTAssertEqual(try cluster.put("n\(index)", "v\(index)").status, 201) }
        XCTAssertEqual(fake.connections, fake.healthChecks, "the fake was sent something besides the proof check")

        // A real volume with the secret joins through the operator's add, the seed's usage.
        let port = try cluster.startVolume()
        let real = try HTTP.send("POST", cluster.masterURL + "/admin/add-volume", body: Array(cluster.volumeURL(port).utf8))
        XCTAssertEqual(real.status, 200, real.text)
        try cluster.waitUntilVolumesUp(2)
        // And a volume's own signed heartbeat is a registration too.
        let signedBeat = try signedSend("POST", cluster.masterURL + "/admin/add-volume", secret: secret,
                                        headers: [(VolumeHeaders.heartbeat, "1")], body: Array(cluster.volumeURL(port).utf8))
        XCTAssertEqual(signedBeat.status, 200, signedBeat.text)
        assertNoSecret(cluster, [add, heartbeat, real])
    }

    /// Started without -m (the README's own set-up), a volume used to trust m= and h= of a
    /// forged ticket: it kept the file forever and sent the bytes to any host named.
    func testVolumeWithoutMasterFlagContactsNobodyOnAForgedTicket() throws {
        let (cluster, _) = try signedCluster(volumes: 1)
        let trap = try FakeServer()
        defer { trap.stop() }
        let volume = cluster.volumeURL(cluster.volumePorts[0])
        let forged = "\(volume)/store/x?t=1&ver=\(UInt64(Date().timeIntervalSince1970) << 20)&m=\(PercentEncoding.encode(trap.url))"
            + "&h=\(PercentEncoding.encode(volume + "," + trap.url))&x=9999999999&sig=" + String(repeating: "0", count: 64)
        let answer = try HTTP.send("PUT", forged, body: [UInt8](repeating: 65, count: 100_000))
        XCTAssertEqual(answer.status, 403, answer.text)
        // A health check that is not the master's must not teach the volume a master.
        _ = try HTTP.send("GET", volume + "/health", headers: [(VolumeHeaders.master, trap.url)])
        usleep(500_000)
        XCTAssertEqual(trap.connections, 0)
        XCTAssertTrue(cluster.tmpFiles(cluster.volumePorts[0]).isEmpty)
        XCTAssertTrue(cluster.valueFiles(cluster.volumePorts[0]).isEmpty)
    }

    // MARK: - A signed cluster works and heals

    func testSignedClusterServesCurlAndHeals() throws {
        let (cluster, _) = try signedCluster(volumes: 2, masterExtra: ["--replicas", "1"])
        // The seed's curl usage, unchanged.
        let base = cluster.masterURL + "/store/curl%20key"
        XCTAssertEqual(try runTool("curl", ["-sS", "-L", "-XPUT", "-d", "value", "-o", "/dev/null", "-w", "%{http_code}", base]).output, "201")
        XCTAssertEqual(try runTool("curl", ["-sS", "-L", base]).output, "value")
        XCTAssertEqual(try runTool("curl", ["-sS", "-L", "-XDELETE", "-o", "/dev/null", "-w", "%{http_code}", base]).output, "204")
        XCTAssertEqual(try runTool("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", base]).output, "404")

        // Draining a volume exercises every signed call of healing: copy, replica write,
        // commit of holders, outcome notices and the removal queue.
        for index in 0..<30 { XCTAssertEqual(try cluster.put("d\(index)", "value \(index)").status, 201) }
        let drained = cluster.volumePorts[0]
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/remove-volume", body: Array(cluster.volumeURL(drained).utf8)).status, 202)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !cluster.valueFiles(drained).isEmpty || (try? HTTP.send("GET", cluster.masterURL + "/admin/volumes"))?
            .text.contains(cluster.volumeURL(drained)) != false {
            usleep(200_000)
        }
        XCTAssertTrue(cluster.valueFiles(drained).isEmpty, cluster.logText())
        for index in 0..<30 { XCTAssertEqual(try cluster.get("d\(index)").text, "value \(index)") }
        // As a word: versions in the log are long numbers that may contain the digits 403.
        XCTAssertNil(cluster.logText().range(of: "\\b403\\b", options: .regularExpression),
                     "a daemon's own call was refused:\n\(cluster.logText())")
        assertNoSecret(cluster, [])
    }

    // MARK: - Client credentials

    func testCredentialsAndRights() throws {
        let users = "# name secret rights\nreader rpass read\nwriter wpass read,write\nroot rootpass read,write,admin\n"
        let (cluster, _) = try signedCluster(volumes: 1, authLines: users)
        let store = cluster.masterURL + "/store/k"
        let anonymous = try HTTP.send("GET", store)
        XCTAssertEqual(anonymous.status, 401)
        XCTAssertEqual(anonymous.headers["WWW-Authenticate"], "Basic realm=\"kalavara\"")
        XCTAssertEqual(try HTTP.send("PUT", store, body: [1], headers: basic("writer", "wrong")).status, 401)
        XCTAssertEqual(try HTTP.send("PUT", store, body: [1], headers: basic("nobody", "wpass")).status, 401)
        XCTAssertEqual(try HTTP.send("PUT", store, body: [1], headers: basic("reader", "rpass")).status, 403)
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/admin/volumes", headers: basic("writer", "wpass")).status, 403)
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/admin/volumes", headers: basic("root", "rootpass")).status, 200)
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/health").status, 200)
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/metrics").status, 200)

        // curl -u … -L: the credentials stay with the master, the ticket opens the volume.
        XCTAssertEqual(try runTool("curl", ["-sS", "-u", "writer:wpass", "-L", "-XPUT", "-d", "secret value", "-o", "/dev/null",
                                            "-w", "%{http_code}", store]).output, "201")
        XCTAssertEqual(try runTool("curl", ["-sS", "-u", "reader:rpass", "-L", store]).output, "secret value")
        XCTAssertEqual(try runTool("curl", ["-sS", "-u", "reader:rpass", "-L", "-XDELETE", "-o", "/dev/null", "-w", "%{http_code}", store]).output, "403")
        XCTAssertEqual(try runTool("curl", ["-sS", "-u", "reader:rpass", cluster.masterURL + "/store/?prefix=k"]).output.contains("\"k\""), true)

        // SIGHUP re-reads the file: a new user works, a removed one stops.
        try Data("newbie npass read\nroot rootpass admin\n".utf8).write(to: URL(fileURLWithPath: cluster.root + "/users"))
        kill(cluster.master!.processIdentifier, SIGHUP)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, (try? HTTP.send("GET", store, headers: basic("newbie", "npass")))?.status != 302 { usleep(50_000) }
        XCTAssertEqual(try HTTP.send("GET", store, headers: basic("newbie", "npass")).status, 302)
        XCTAssertEqual(try HTTP.send("GET", store, headers: basic("reader", "rpass")).status, 401)
        // A broken file keeps the table in force.
        try Data("broken line\n".utf8).write(to: URL(fileURLWithPath: cluster.root + "/users"))
        kill(cluster.master!.processIdentifier, SIGHUP)
        usleep(500_000)
        XCTAssertEqual(try HTTP.send("GET", store, headers: basic("newbie", "npass")).status, 302)
        XCTAssertTrue(cluster.master!.isRunning)
        for secret in ["rpass", "wpass", "rootpass", "npass"] { XCTAssertFalse(cluster.logText().contains(secret), secret) }
    }

    func testSecretFileProblemsAreOneLineErrors() throws {
        let cluster = try TestCluster()
        let short = cluster.root + "/short"
        try Data("tiny".utf8).write(to: URL(fileURLWithPath: short))
        for arguments in [["--secret-file", short], ["--secret-file", cluster.root + "/missing"],
                          ["--auth-file", cluster.root + "/missing"]] {
            let result = try runTool(TestCluster.binDirectory + "/master",
                                     ["-p", String(freeLoopbackPort()), "-d", cluster.root + "/db", "--bind", "127.0.0.1"] + arguments)
            XCTAssertEqual(result.status, 2, result.output)
            XCTAssertTrue(result.output.contains("secret file") || result.output.contains("auth file"), result.output)
            XCTAssertFalse(result.output.contains("tiny"))
        }
    }

    // MARK: - A redirect never turns an upload into another value

    func testClientThatDoesNotResendTheBodyIsRefused() throws {
        let (cluster, _) = try signedCluster(volumes: 1)
        let script = """
        import requests, sys
        base = sys.argv[1]
        def gen():
            yield b"hello "
            yield b"world"
        r = requests.put(base + "/store/gen", data=gen())
        print("generator", r.status_code, r.text.strip()[:80])
        r = requests.put(base + "/store/bytes", data=b"hello world")
        print("bytes", r.status_code)
        r = requests.get(base + "/store/bytes")
        print("get", r.status_code, r.text)
        r = requests.get(base + "/store/gen")
        print("gen-get", r.status_code)
        """
        let result = try runTool("python3", ["-c", script, cluster.masterURL])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("generator 400 the client did not resend the body"), result.output)
        XCTAssertTrue(result.output.contains("bytes 201"), result.output)
        XCTAssertTrue(result.output.contains("get 200 hello world"), result.output)
        XCTAssertTrue(result.output.contains("gen-get 404"), result.output)
        // A client that announces a length and sends another to the volume is refused too.
        let ticket = try XCTUnwrap(try HTTP.send("PUT", cluster.masterURL + "/store/len", body: Array("twelve bytes".utf8)).headers["Location"])
        XCTAssertEqual(try HTTP.send("PUT", ticket, body: []).status, 400)
        XCTAssertEqual(try HTTP.send("PUT", ticket, body: Array("twelve bytes".utf8)).status, 201)
        // Node's fetch follows a 307 with a buffered body, as Go's net/http does.
        if try available(FileManager.default.isExecutableFile(atPath: "/usr/bin/node"),
                         "node is needed (scripts/install-deps --test installs it)") {
            let node = try runTool("node", ["-e", """
                const base = process.argv[1];
                (async () => {
                  const put = await fetch(base + "/store/node", { method: "PUT", body: "from node" });
                  const get = await fetch(base + "/store/node");
                  console.log(put.status, get.status, await get.text());
                })();
                """, cluster.masterURL])
            XCTAssertEqual(node.output.trimmingCharacters(in: .whitespacesAndNewlines), "201 200 from node", node.output)
        }
        // curl with a chunked upload from stdin works as before.
        let chunked = try runTool("curl", ["-sS", "-L", "-XPUT", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-", "-o", "/dev/null",
                                           "-w", "%{http_code}", cluster.masterURL + "/store/chunked"], stdin: Data("piped".utf8))
        XCTAssertEqual(chunked.output, "201")
        XCTAssertEqual(try cluster.get("chunked").text, "piped")
    }
}

/// A bare HTTP server that answers every request `200 ok` and counts connections and
/// health checks: the attacker's fake volume, or a trap that must never be contacted.
/// With `trickle`, each answer goes a byte at a time, that many seconds apart.
final class FakeServer: @unchecked Sendable {
    let port: Int
    private let trickle: Double
    var url: String { "http://127.0.0.1:\(port)" }
    private let fd: Int32
    private let lock = NSLock()
    private var counts = (connections: 0, health: 0)
    private var running = true

    var connections: Int { lock.withLock { counts.connections } }
    var healthChecks: Int { lock.withLock { counts.health } }

    init(trickle: Double = 0) throws {
        self.trickle = trickle
        port = freeLoopbackPort()
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else { throw ClusterError("fake server cannot listen") }
        Thread { [self] in serve() }.start()
    }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            guard client >= 0, lock.withLock({ running }) else { return }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let count = recv(client, &buffer, buffer.count, 0)
            let text = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
            lock.withLock {
                counts.connections += 1
                if text.hasPrefix("GET /health") { counts.health += 1 }
            }
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            if trickle > 0 {
                for var byte in Array(answer.utf8) where send(client, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 {
                    Thread.sleep(forTimeInterval: trickle)
                }
            } else {
                _ = answer.withCString { send(client, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            }
            close(client)
        }
    }

    func stop() {
        lock.withLock { running = false }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// What an open cluster must still withstand.
final class OpenClusterEdgeTests: XCTestCase {
    /// One journal entry with a version the master never issued used to stop the volume's
    /// orphan sweep for good: the master answered 400, the sweep gave up and met the same
    /// entry first on every pass, so real orphans behind it were never removed.
    func testAVersionNeverIssuedDoesNotStopTheOrphanSweep() throws {
        let cluster = try TestCluster.started(volumes: 1, volumeExtra: ["--orphan-grace", "1"])
        let port = cluster.volumePorts[0]
        let volume = cluster.volumeURL(port)
        let forged = try HTTP.send("PUT", volume + "/internal/replica/forged?t=1&ver=\(UInt64.max / 2)&m="
                                   + PercentEncoding.encode(cluster.masterURL), body: Array("x".utf8))
        XCTAssertEqual(forged.status, 200, forged.text)
        let ticket = try XCTUnwrap(try HTTP.send("PUT", cluster.masterURL + "/store/limbo", body: Array("limbo".utf8)).headers["Location"])
        cluster.killMaster()
        XCTAssertEqual(try HTTP.send("PUT", ticket, body: Array("limbo".utf8)).status, 503)
        try cluster.restartMaster()
        try waitUntil("both orphans removed", timeout: 20) {
            cluster.copies(of: "forged").isEmpty && cluster.copies(of: "limbo").isEmpty
        }
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/forged", body: Array("real".utf8)).status, 201,
                       "no fence was left in the future")
    }
}
