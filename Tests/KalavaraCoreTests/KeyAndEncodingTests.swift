@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

final class KeyAndEncodingTests: XCTestCase {
    func testKeyRules() throws {
        XCTAssertEqual(try Key(percentEncoded: "a/b%20c").description, "a/b c")
        XCTAssertEqual(try Key(percentEncoded: "a/../b").bytes, Array("a/../b".utf8))
        XCTAssertEqual(try Key(percentEncoded: "plus+sign").description, "plus+sign")
        let errors: [(Substring, Int)] = [("", 400), ("%00", 400), ("a%0", 400), ("%g1", 400),
                                          (Substring(String(repeating: "x", count: 1025)), 414),
                                          (Substring(String(repeating: "%41", count: 1025)), 414)]
        for (text, status) in errors {
            XCTAssertThrowsError(try Key(percentEncoded: text)) { XCTAssertEqual(($0 as? HTTPError)?.status, status, String(text)) }
        }
        XCTAssertNoThrow(try Key(percentEncoded: Substring(String(repeating: "%41", count: 1024))))
    }

    func testLocationEncodingEscapesDotsAndRoundTrips() throws {
        let key = try Key(Array("a/../b c/%/ключ/.".utf8) + [1, 255])
        let encoded = key.pathComponent
        XCTAssertFalse(encoded.contains("."))
        XCTAssertFalse(encoded.contains(" "))
        XCTAssertTrue(encoded.hasPrefix("a/%2E%2E/b%20c/%25/"))
        XCTAssertEqual(try Key(percentEncoded: Substring(encoded)), key)
    }

    func testEveryByteRoundTrips() throws {
        let key = try Key((1...255).map { UInt8($0) })
        XCTAssertEqual(try Key(percentEncoded: Substring(key.pathComponent)), key)
    }

    func testQueryParameters() throws {
        let query = try QueryParameters("a=1&b=x%20y&empty=&flag&a=2")
        XCTAssertEqual(query["a"], "1")
        XCTAssertEqual(query["b"], "x y")
        XCTAssertEqual(query["empty"], "")
        XCTAssertEqual(query["flag"], "")
        XCTAssertNil(query["missing"])
        XCTAssertThrowsError(try QueryParameters("a=%zz"))
        var built = QueryParameters()
        built.add("h", "http://a:1,http://b:2")
        built.add("k", bytes: [0, 38, 61])
        let reparsed = try QueryParameters(Substring(built.encoded))
        XCTAssertEqual(reparsed["h"], "http://a:1,http://b:2")
        XCTAssertEqual(reparsed.bytes("k"), [0, 38, 61])
    }

    func testPlacementTicketRoundTripAndValidation() throws {
        let ticket = PlacementTicket(version: 42, master: "http://m:6000", holders: ["http://a:1", "http://b:2"])
        XCTAssertEqual(try PlacementTicket(QueryParameters(Substring(ticket.query))), ticket)
        XCTAssertNil(try PlacementTicket(QueryParameters("x=1")))
        for bad in ["t=2&ver=1", "t=1", "t=1&ver=0", "t=1&ver=abc", "t=1&ver=1&m=ftp%3A%2F%2Fx", "t=1&ver=1&h=nope"] {
            XCTAssertThrowsError(try PlacementTicket(QueryParameters(Substring(bad))), bad)
        }
    }

    func testHTTPURL() {
        let url = HTTPURL("http://127.0.0.1:7000/store/k?x=1")
        XCTAssertEqual(url?.host, "127.0.0.1")
        XCTAssertEqual(url?.port, 7000)
        XCTAssertEqual(url?.pathAndQuery, "/store/k?x=1")
        XCTAssertEqual(HTTPURL("http://h")?.port, 80)
        XCTAssertEqual(HTTPURL("http://[::1]:9")?.authority, "[::1]:9")
        XCTAssertEqual(HTTPURL("https://h:1")?.isSecure, true)
        XCTAssertEqual(HTTPURL("https://h")?.port, 443)
        for bad in ["", "ftp://h:1", "http://", "http://h:0", "http://h:70000", "http://u@h:1", "http://h h:1", "h:1"] {
            XCTAssertNil(HTTPURL(bad), bad)
        }
        XCTAssertEqual(VolumeRegistry.normalize(" http://h:1/ \n"), "http://h:1")
        XCTAssertNil(VolumeRegistry.normalize("http://h:1/path"))
    }

    func testSHA256KnownAnswers() {
        XCTAssertEqual(SHA256.hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hex([UInt8](repeating: 0x61, count: 1000)),
                       "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    func testHTTPDates() {
        XCTAssertEqual(HTTPDate.format(0), "Thu, 01 Jan 1970 00:00:00 GMT")
        XCTAssertEqual(HTTPDate.format(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT") // RFC 9110's example
        let line = String(decoding: HTTPDate.headerLine(), as: UTF8.self)
        XCTAssertTrue(line.hasPrefix("Date: ") && line.hasSuffix(" GMT\r\nServer: kalavara\r\n\r\n"), line)
    }

    func testByteRanges() {
        XCTAssertEqual(ByteRange.parse("bytes=0-0", size: 10), .satisfiable(0..<1))
        XCTAssertEqual(ByteRange.parse("bytes=3-", size: 10), .satisfiable(3..<10))
        XCTAssertEqual(ByteRange.parse("bytes=-4", size: 10), .satisfiable(6..<10))
        XCTAssertEqual(ByteRange.parse("bytes=-40", size: 10), .satisfiable(0..<10))
        XCTAssertEqual(ByteRange.parse("bytes=8-20", size: 10), .satisfiable(8..<10))
        XCTAssertEqual(ByteRange.parse("bytes=10-", size: 10), .unsatisfiable)
        XCTAssertEqual(ByteRange.parse("bytes=-0", size: 10), .unsatisfiable)
        XCTAssertEqual(ByteRange.parse("bytes=0-", size: 0), .unsatisfiable)
        XCTAssertEqual(ByteRange.parse("bytes=5-3", size: 10), .ignored)
        XCTAssertEqual(ByteRange.parse("bytes=1-2,3-4", size: 10), .ignored)
        XCTAssertEqual(ByteRange.parse("pages=1-2", size: 10), .ignored)
        XCTAssertEqual(ByteRange.parse("bytes=a-b", size: 10), .ignored)
    }

    func testCommandLines() throws {
        let command = try MasterCommand.parse(["-p", "6001", "-d", "db", "-v", "http://a:1", "http://b:2", "--replicas=1"])
        let parsed = command.configuration()
        XCTAssertEqual(parsed.server.port, 6001)
        XCTAssertEqual(parsed.volumes, ["http://a:1", "http://b:2"])
        XCTAssertEqual(parsed.replicas, 1)
        XCTAssertEqual(parsed.server.host, "0.0.0.0")
        XCTAssertEqual(command.logLevel, .info)
        for bad in [["--nope"], ["-p"], ["-v"], ["-d", "db", "-p", "x"], ["-d", "db", "--replicas", "0"],
                    ["-d", "db", "-v", "localhost:7000"], ["-d", "db", "--read-timeout", "-1"], ["-d", "db", "--log-level", "loud"]] {
            XCTAssertThrowsError(try MasterCommand.parse(bad), "\(bad)")
        }
        let configuration = try MasterConfiguration.parse(["-p", "6000", "-d", "db", "-v", "http://127.0.0.1:7000"])
        XCTAssertEqual(configuration.advertisedURL, "http://127.0.0.1:6000")
        XCTAssertEqual(try MasterConfiguration.parse(["-d", "db", "--advertise", "http://m:1/"]).advertisedURL, "http://m:1")
        XCTAssertThrowsError(try VolumeConfiguration.parse(["-d", "x", "-b", "http://v:1"]))
        let volume = try VolumeConfiguration.parse(["-p", "7001", "-d", "x", "-m", "http://m:6000", "-b", "http://v:7001",
                                                    "--log-level", "debug"])
        XCTAssertEqual(volume.masterURLs, ["http://m:6000"])
        XCTAssertEqual(volume.selfURL, "http://v:7001")
        XCTAssertEqual(volume.zone, Placement.defaultZone)
        XCTAssertEqual(try VolumeConfiguration.parse(["-d", "x", "--zone", "rack-7"]).zone, "rack-7")
        XCTAssertThrowsError(try VolumeConfiguration.parse(["-d", "x", "--zone", "rack 7"]))
        XCTAssertEqual(try VolumeCommand.parse(["-d", "x", "--log-level", "debug"]).logLevel, .debug)
        // Usage errors become one line in the daemons' style.
        XCTAssertEqual(Daemon.usageMessage("Error: Unknown option '--nope'\nUsage: master ..."),
                       "unknown option '--nope' (see --help)")
    }

}
