import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// Values and keys through the master, as a client sees them.
final class StoreTests: XCTestCase {
    var cluster: TestCluster!

    override func setUpWithError() throws { cluster = try TestCluster.started(volumes: 2) }
    override func tearDown() { cluster?.shutdown() }

    func testBinaryValueWithEveryByte() throws {
        let value = (0..<4096).map { UInt8(truncatingIfNeeded: $0) }
        XCTAssertEqual(try cluster.put("binary", value).status, 201)
        let answer = try cluster.get("binary")
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.body, value)
    }

    func testEmptyValue() throws {
        XCTAssertEqual(try cluster.put("empty", []).status, 201)
        let answer = try cluster.get("empty")
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.body, [])
    }

    func testFiftyMebibyteValueStreamsThrough() throws {
        let file = cluster.root + "/50m.bin"
        var generator = SystemRandomNumberGenerator()
        let value = Data((0..<(50 << 20) / 8).flatMap { _ in withUnsafeBytes(of: generator.next() as UInt64) { Array($0) } })
        try value.write(to: URL(fileURLWithPath: file))
        var result = try runTool("curl", ["-sS", "-L", "-T", file, "\(cluster.masterURL)/store/fifty", "-w", "%{http_code}"])
        XCTAssertTrue(result.output.hasSuffix("201"), result.output)
        let out = cluster.root + "/50m.out"
        result = try runTool("curl", ["-sS", "-L", "-o", out, "\(cluster.masterURL)/store/fifty", "-w", "%{http_code}"])
        XCTAssertEqual(result.output, "200")
        XCTAssertTrue(try Data(contentsOf: URL(fileURLWithPath: out)) == value, "50 MiB value came back different")
    }

    func testKeysWithSlashesSpacesUnicodeAndEscapes() throws {
        // Each pair: the path as sent, and the key (its bytes) it names.
        let keys: [(String, [UInt8])] = [
            ("a/b/c", Array("a/b/c".utf8)),
            ("a%20b", Array("a b".utf8)),
            ("%D0%BA%D0%BB%D1%8E%D1%87", Array("ключ".utf8)),
            ("100%25", Array("100%".utf8)),
            ("a/%2E%2E/b", Array("a/../b".utf8)),
            ("a/../b", Array("a/../b".utf8)),
            ("trailing/", Array("trailing/".utf8)),
            ("q%3Fmark", Array("q?mark".utf8)),
            ("%01%FF", [0x01, 0xFF]),
        ]
        for (index, (path, _)) in keys.enumerated() {
            XCTAssertEqual(try cluster.put(path, Array("value \(index)".utf8)).status, 201, path)
        }
        for (index, (path, _)) in keys.enumerated() {
            let answer = try cluster.get(path)
            XCTAssertEqual(answer.status, 200, path)
            // "a/%2E%2E/b" and "a/../b" are the same key: the later write wins.
            let expected = path == "a/%2E%2E/b" ? 5 : index
            XCTAssertEqual(answer.text, "value \(expected)", path)
        }
        // "a/../b" is not "b".
        XCTAssertEqual(try cluster.get("b").status, 404)
        // The Location escapes dots, so curl -L cannot normalise the key away.
        let redirect = try HTTP.send("GET", cluster.masterURL + "/store/a/../b")
        XCTAssertEqual(redirect.status, 302)
        XCTAssertTrue(redirect.headers["Location"]!.contains("/store/a/%2E%2E/b?"), redirect.headers["Location"]!)
        let viaCurl = try runTool("curl", ["-sS", "-L", "--path-as-is", cluster.masterURL + "/store/a/../b"])
        XCTAssertEqual(viaCurl.output, "value 5")
        // The keys are the ones the table names: the listing has exactly them, in byte order
        // (as UTF-8, 0xFF shown as U+FFFD), and each reads back its last value when asked
        // for with every byte escaped, a spelling no path above used.
        var lastWrite: [[UInt8]: Int] = [:]
        for (index, (_, key)) in keys.enumerated() { lastWrite[key] = index }
        let listing = try HTTP.send("GET", cluster.masterURL + "/store/")
        let listed = (try JSONSerialization.jsonObject(with: Data(listing.body)) as? [String: Any])?["keys"] as? [String]
        XCTAssertEqual(listed, lastWrite.keys.sorted { $0.lexicographicallyPrecedes($1) }.map { String(decoding: $0, as: UTF8.self) },
                       listing.text)
        for (key, index) in lastWrite {
            let escaped = key.map { String(format: "%%%02X", $0) }.joined()
            XCTAssertEqual(try cluster.get(escaped).text, "value \(index)", escaped)
        }
    }

    func testInvalidKeysAreRefused() throws {
        for method in ["PUT", "GET", "DELETE"] {
            XCTAssertEqual(try HTTP.send(method, cluster.masterURL + "/store/bad%00nul").status, 400, method)
            XCTAssertEqual(try HTTP.send(method, cluster.masterURL + "/store/bad%zzescape").status, 400, method)
            XCTAssertEqual(try HTTP.send(method, cluster.masterURL + "/store/bad%4").status, 400, method)
            XCTAssertEqual(try HTTP.send(method, cluster.masterURL + "/store/" + String(repeating: "k", count: 1025)).status, 414, method)
        }
        XCTAssertEqual(try HTTP.send("PUT", cluster.masterURL + "/store/").status, 400)
        XCTAssertEqual(try HTTP.send("DELETE", cluster.masterURL + "/store/").status, 400)
        // The longest valid key works.
        let longest = String(repeating: "k", count: 1024)
        XCTAssertEqual(try cluster.put(longest, [1]).status, 201)
        XCTAssertEqual(try cluster.get(longest).body, [1])
    }

    func testOverwriteReplacesValueAndLeavesOneFile() throws {
        XCTAssertEqual(try cluster.put("k", Array("first".utf8)).status, 201)
        XCTAssertEqual(try cluster.put("k", Array("second, longer".utf8)).status, 201)
        XCTAssertEqual(try cluster.get("k").text, "second, longer")
        // The old version goes right after the answer.
        try waitUntil("old version removed") { cluster.volumePorts.flatMap(cluster.valueFiles).count == 1 }
    }

    func testDeleteRemovesValueAndFile() throws {
        XCTAssertEqual(try cluster.put("gone", [1, 2, 3]).status, 201)
        let delete = try HTTP.follow("DELETE", cluster.masterURL + "/store/gone")
        XCTAssertEqual(delete.status, 204)
        XCTAssertEqual(try cluster.get("gone").status, 404)
        XCTAssertEqual(try HTTP.send("DELETE", cluster.masterURL + "/store/gone").status, 404)
        try waitUntil("file removed") { cluster.volumePorts.flatMap(cluster.valueFiles).isEmpty }
        // A deleted key can be written again.
        XCTAssertEqual(try cluster.put("gone", [4]).status, 201)
        XCTAssertEqual(try cluster.get("gone").body, [4])
    }

    func testPutNeverFollowedLeavesNoTrace() throws {
        let redirect = try HTTP.send("PUT", cluster.masterURL + "/store/ghost", body: Array("x".utf8))
        XCTAssertEqual(redirect.status, 307)
        XCTAssertNotNil(redirect.headers["Location"])
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/ghost").status, 404)
        XCTAssertEqual(try HTTP.send("HEAD", cluster.masterURL + "/store/ghost").status, 404)
    }

    func testMissingKeyAndHead() throws {
        XCTAssertEqual(try cluster.get("nothing").status, 404)
        XCTAssertEqual(try cluster.put("h", Array("12345".utf8)).status, 201)
        let head = try HTTP.send("HEAD", cluster.masterURL + "/store/h")
        XCTAssertEqual(head.status, 302)
        let onVolume = try HTTP.send("HEAD", head.headers["Location"]!)
        XCTAssertEqual(onVolume.status, 200)
        XCTAssertEqual(onVolume.headers["Content-Length"], "5")
        XCTAssertEqual(onVolume.body, [])
        XCTAssertNotNil(onVolume.headers["ETag"])
    }

    func testListKeysByPrefix() throws {
        for name in ["p/1", "p/2", "p/3", "q/1"] { XCTAssertEqual(try cluster.put(name, [1]).status, 201) }
        _ = try HTTP.follow("DELETE", cluster.masterURL + "/store/p/2")
        var answer = try HTTP.send("GET", cluster.masterURL + "/store/?prefix=p/")
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.headers["Content-Type"], "application/json")
        XCTAssertEqual(answer.text, "{\"keys\":[\"p/1\",\"p/3\"],\"next\":null}\n")
        answer = try HTTP.send("GET", cluster.masterURL + "/store/?limit=2")
        XCTAssertEqual(answer.text, "{\"keys\":[\"p/1\",\"p/3\"],\"next\":\"p/3\"}\n")
        answer = try HTTP.send("GET", cluster.masterURL + "/store/?limit=2&after=p/3")
        XCTAssertEqual(answer.text, "{\"keys\":[\"q/1\"],\"next\":null}\n")
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/?limit=zero").status, 400)
        // With a delimiter, as S3 lists: keys up to the next delimiter roll up into prefixes.
        answer = try HTTP.send("GET", cluster.masterURL + "/store/?delimiter=/")
        XCTAssertEqual(answer.text, "{\"keys\":[],\"next\":null,\"prefixes\":[\"p/\",\"q/\"]}\n")
        answer = try HTTP.send("GET", cluster.masterURL + "/store/?delimiter=/&limit=1")
        XCTAssertEqual(answer.text, "{\"keys\":[],\"next\":\"p/\",\"prefixes\":[\"p/\"]}\n")
        answer = try HTTP.send("GET", cluster.masterURL + "/store/?delimiter=/&limit=1&after=p/")
        XCTAssertEqual(answer.text, "{\"keys\":[],\"next\":\"q/\",\"prefixes\":[\"q/\"]}\n")
        answer = try HTTP.send("GET", cluster.masterURL + "/store/?prefix=p/&delimiter=/")
        XCTAssertEqual(answer.text, "{\"keys\":[\"p/1\",\"p/3\"],\"next\":null,\"prefixes\":[]}\n")
    }

    func testValuesSpreadOverVolumes() throws {
        for index in 0..<40 { XCTAssertEqual(try cluster.put("spread-\(index)", [UInt8(index)]).status, 201) }
        let counts = cluster.volumePorts.map { cluster.valueFiles($0).count }
        XCTAssertEqual(counts.reduce(0, +), 40)
        XCTAssertTrue(counts.allSatisfy { $0 >= 8 }, "placement is lopsided: \(counts)")
    }
}
