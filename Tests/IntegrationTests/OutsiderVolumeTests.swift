import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// What outsiders found on the volumes (issue 21), each against real processes: a ticket
/// acted on by a volume it does not name, files cut or grown on disk and served anyway,
/// removed values left whole under the data directory, and a scrub anyone could start.
final class OutsiderVolumeTests: XCTestCase {
    static let secretText = "kalavara-outsider-secret-\(UUID().uuidString)"
    private var cluster: TestCluster!

    override func tearDown() {
        cluster?.shutdown()
        cluster = nil
    }

    /// A cluster of `volumes` (signed with `secretText` if `signed`), waited for until the
    /// master counts every volume up (which is also when each has learnt its URL).
    private func start(volumes: Int, replicas: Int, signed: Bool = false, authLines: String? = nil,
                       volumeExtra: [String] = []) throws {
        cluster = try TestCluster()
        var masterExtra = ["--replicas", String(replicas)]
        cluster.volumeExtra = volumeExtra
        if signed {
            let secretPath = cluster.root + "/secret"
            try Data(Self.secretText.utf8).write(to: URL(fileURLWithPath: secretPath))
            cluster.volumeExtra += ["--secret-file", secretPath]
            masterExtra += ["--secret-file", secretPath]
        }
        if let authLines {
            let authPath = cluster.root + "/users"
            try Data(authLines.utf8).write(to: URL(fileURLWithPath: authPath))
            masterExtra += ["--auth-file", authPath]
        }
        let ports = try (0..<volumes).map { _ in try cluster.startVolume() }
        try cluster.startMaster(volumePorts: ports, extra: masterExtra)
        let admin = authLines == nil ? [] : root
        try cluster.waitUntilVolumesUp(volumes, headers: admin)
    }

    private let root = [("Authorization", "Basic " + Data("root:rootpass".utf8).base64EncodedString())]

    /// The master's redirect for a write (not followed): the volume it names and the query.
    private func redirect(_ method: String, _ key: String, body: [UInt8] = []) throws -> (port: Int, target: String) {
        let answer = try HTTP.send(method, cluster.masterURL + "/store/" + key, body: body)
        XCTAssertEqual(answer.status, 307, answer.text)
        let location = try XCTUnwrap(answer.headers["Location"].flatMap(HTTPURL.init))
        return (location.port, location.pathAndQuery)
    }

    // MARK: - Item 10: a ticket is for the volume it names

    func testAVolumeActsOnlyOnTicketsThatNameIt() throws {
        for replicas in [1, 2] {
            try start(volumes: 3, replicas: replicas, signed: true)
            let value = Array("placed where the master said (replicas \(replicas))".utf8)

            // A PUT with a genuine ticket, sent to each volume but the one it names: refused,
            // nothing stored anywhere (no copy forwarded either).
            let write = try redirect("PUT", "misdirected", body: value)
            for port in cluster.volumePorts where port != write.port {
                let answer = try HTTP.send("PUT", cluster.volumeURL(port) + write.target, body: value)
                XCTAssertEqual(answer.status, 403, "replicas \(replicas): \(answer.text)")
                XCTAssertEqual(answer.text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count, 1)
            }
            XCTAssertEqual(cluster.copies(of: "misdirected"), [:], "replicas \(replicas): nothing stored")
            XCTAssertEqual(try cluster.get("misdirected", redirects: 3).status, 404)

            // The same ticket where it belongs works.
            XCTAssertEqual(try HTTP.send("PUT", cluster.volumeURL(write.port) + write.target, body: value).status, 201)
            let placed = cluster.copies(of: "misdirected")
            XCTAssertEqual(placed.count, replicas)

            // A DELETE sent elsewhere: refused, the value and every copy stay.
            let delete = try redirect("DELETE", "misdirected")
            for port in cluster.volumePorts where port != delete.port {
                let answer = try HTTP.send("DELETE", cluster.volumeURL(port) + delete.target)
                XCTAssertEqual(answer.status, 403, "replicas \(replicas): \(answer.text)")
            }
            XCTAssertEqual(try cluster.get("misdirected", redirects: 3).body, value)
            XCTAssertEqual(cluster.copies(of: "misdirected"), placed, "replicas \(replicas): no copy deleted")
            XCTAssertEqual(try HTTP.send("DELETE", cluster.volumeURL(delete.port) + delete.target).status, 204)
            XCTAssertEqual(try cluster.get("misdirected", redirects: 3).status, 404)

            // A replica copy (a signed internal call) to a volume the ticket does not name.
            if replicas == 2 {
                let copy = try redirect("PUT", "stray-copy", body: value)
                let holders = try XCTUnwrap(QueryParameters(copy.target.split(separator: "?")[1])["h"])
                let outsider = try XCTUnwrap(cluster.volumePorts.first { !holders.contains(":\($0)") })
                let path = "/internal/replica/stray-copy?" + copy.target.split(separator: "?")[1]
                var headers = HTTPHeaders()
                SignedCall.sign(&headers, method: "PUT", target: path, body: value, length: value.count,
                                secret: try ClusterSecret(bytes: Array(Self.secretText.utf8)))
                let answer = try HTTP.send("PUT", cluster.volumeURL(outsider) + path, body: value,
                                           headers: headers.fields.map { ($0.name, $0.value) })
                XCTAssertEqual(answer.status, 403, answer.text)
                XCTAssertTrue(answer.text.contains("not among the ticket's holders"), answer.text)
                XCTAssertEqual(cluster.copies(of: "stray-copy"), [:])
            }
            cluster.shutdown()
        }
    }

    // MARK: - Item 11: a cut or grown file is never served

    func testACutOrGrownFileIsNeverServedAndIsRepaired() throws {
        try start(volumes: 3, replicas: 2)
        // 300,000 bytes go by sendfile (over the in-memory limit), 1,000 from memory.
        let cases: [(key: String, size: Int, change: Int)] = [
            ("large-cut", 300_000, -100), ("large-grown", 300_000, 70), ("small-cut", 1000, -100), ("small-grown", 1000, 70),
        ]
        var values: [String: [UInt8]] = [:]
        for (key, size, _) in cases {
            values[key] = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ key.utf8.count) }
            XCTAssertEqual(try cluster.put(key, values[key]!).status, 201)
        }
        var damaged: [String: (port: Int, version: String)] = [:]
        for (key, _, change) in cases {
            let port = try XCTUnwrap(cluster.copies(of: key).keys.sorted().first)
            let name = try XCTUnwrap(cluster.copies(of: key)[port]?.first)
            let path = cluster.volumeDirectory(port) + "/data/" + name.prefix(3) + "/" + name
            let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: path))
            let length = handle.seekToEndOfFile()
            if change < 0 {
                handle.truncateFile(atOffset: length - UInt64(-change))
            } else {
                handle.write(Data(repeating: 0x5A, count: change))
            }
            handle.closeFile()
            damaged[key] = (port, String(name.split(separator: ".").last!))
        }
        // A reader sent to the damaged copy is sent back to the master, never given its bytes.
        for (key, _, _) in cases {
            let (port, version) = damaged[key]!
            let direct = try HTTP.send("GET", cluster.volumeURL(port) + "/store/\(key)?t=1&ver=\(version)")
            XCTAssertEqual(direct.status, 302, "\(key): \(direct.status), \(direct.body.count) bytes")
        }
        // Through the master every read gets the right bytes, and the bad copy is restored.
        for (key, _, _) in cases {
            for _ in 0..<4 { XCTAssertEqual(try cluster.get(key, redirects: 3).body, values[key], key) }
        }
        for (key, _, _) in cases {
            let (port, version) = damaged[key]!
            try waitUntil("\(key) repaired on \(port)", timeout: 30) {
                guard let copy = try? HTTP.send("GET", cluster.volumeURL(port) + "/store/\(key)?t=1&ver=\(version)") else {
                    return false
                }
                return copy.status == 200 && copy.body == values[key]
            }
        }
        let quarantined = cluster.volumePorts.flatMap { port in
            (try? FileManager.default.contentsOfDirectory(atPath: cluster.volumeDirectory(port) + "/quarantine")) ?? []
        }
        XCTAssertEqual(quarantined.count, cases.count, "each bad copy kept for inspection")
    }

    // MARK: - Item 12: no removed value stays on disk

    func testNoDeletedOrOverwrittenValueStaysOnDisk() throws {
        try start(volumes: 2, replicas: 2, volumeExtra: ["--checkpoint-every", "0.2"])
        // Sizes: journaled (under 16 KiB), recycled but not journaled (under 64 KiB), unlinked.
        func value(_ marker: String, _ size: Int) -> [UInt8] {
            Array(String(repeating: marker + "|", count: size / (marker.count + 1) + 1).utf8.prefix(size))
        }
        var dead: [String] = [], live: [String: [UInt8]] = [:]
        for size in [1000, 40_000, 100_000] {
            let tag = "\(size)-\(UUID().uuidString.prefix(8))"
            XCTAssertEqual(try cluster.put("deleted-\(size)", value("DEAD-DELETED-\(tag)", size)).status, 201)
            XCTAssertEqual(try cluster.put("overwritten-\(size)", value("DEAD-OVERWRITTEN-\(tag)", size)).status, 201)
            XCTAssertEqual(try cluster.put("kept-\(size)", value("LIVE-KEPT-\(tag)", size)).status, 201)
            dead += ["DEAD-DELETED-\(tag)", "DEAD-OVERWRITTEN-\(tag)"]
            live["kept-\(size)"] = value("LIVE-KEPT-\(tag)", size)
            live["overwritten-\(size)"] = value("LIVE-NEW-\(tag)", size)
        }
        for size in [1000, 40_000, 100_000] {
            XCTAssertEqual(try HTTP.follow("DELETE", cluster.masterURL + "/store/deleted-\(size)").status, 204)
            XCTAssertEqual(try cluster.put("overwritten-\(size)", live["overwritten-\(size)"]!).status, 201)
        }
        // The journal holds a small value's bytes in hex until a checkpoint: look for both.
        let needles = dead.flatMap { [Data($0.utf8), Data(Hex.encode(Array($0.utf8)).utf8)] }
        var found: [String] = []
        do {
            try waitUntil("no removed value's bytes under any volume directory", timeout: 20) {
                found = filesHolding(needles)
                return found.isEmpty
            }
        } catch {
            XCTFail("removed values still on disk in: \(found)")
        }
        XCTAssertFalse(filesHolding(live.values.map { Data($0.prefix(40)) }).isEmpty, "the search does find live values")
        for (key, bytes) in live { XCTAssertEqual(try cluster.get(key, redirects: 3).body, bytes, key) }
    }

    /// Every file under every volume's directory (data, tmp, journal, quarantine) holding any of `needles`.
    private func filesHolding(_ needles: [Data]) -> [String] {
        var holding: [String] = []
        for port in cluster.volumePorts {
            let directory = cluster.volumeDirectory(port)
            let walk = FileManager.default.enumerator(atPath: directory)
            while let path = walk?.nextObject() as? String {
                guard let contents = FileManager.default.contents(atPath: directory + "/" + path) else { continue }
                if needles.contains(where: { contents.range(of: $0) != nil }) { holding.append("\(port)/\(path)") }
            }
        }
        return holding
    }

    // MARK: - Item 15d: the scrub is started by the cluster or an admin

    func testOnlyTheClusterOrAnAdminStartsAScrub() throws {
        try start(volumes: 2, replicas: 1, signed: true, authLines: "root rootpass read,write,admin\nreader rpass read\n")
        let volume = cluster.volumeURL(cluster.volumePorts[0])
        let unsigned = try HTTP.send("POST", volume + "/admin/scrub")
        XCTAssertEqual(unsigned.status, 403, unsigned.text)
        XCTAssertEqual(try HTTP.send("GET", volume + "/admin/scrub").status, 200, "progress stays readable")
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/scrub").status, 401)
        let reader = [("Authorization", "Basic " + Data("reader:rpass".utf8).base64EncodedString())]
        XCTAssertEqual(try HTTP.send("POST", cluster.masterURL + "/admin/scrub", headers: reader).status, 403)

        // The operator's way: `kalavara scrub` asks the master, which signs its call to each volume.
        let cli = TestCluster.binDirectory + "/kalavara"
        let scrub = try runTool(cli, ["-m", cluster.masterURL, "--user", "root:rootpass", "scrub", "--wait", "--timeout", "30"])
        XCTAssertEqual(scrub.status, 0, scrub.output)
        XCTAssertTrue(scrub.output.contains("scrub done on 2 volume(s)"), scrub.output)
        for port in cluster.volumePorts {
            let progress = try HTTP.send("GET", cluster.volumeURL(port) + "/admin/scrub")
            let passes = (try JSONSerialization.jsonObject(with: Data(progress.body)) as? [String: Any])?["passes"] as? Int
            XCTAssertGreaterThanOrEqual(passes ?? 0, 1, "port \(port)")
        }
    }
}
