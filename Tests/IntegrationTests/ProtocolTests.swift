import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// The hand-written HTTP server against raw bytes: framing, keep-alive, broken clients.
final class ProtocolTests: XCTestCase {
    var cluster: TestCluster!
    override func setUpWithError() throws { cluster = try TestCluster.started(volumes: 1) }
    override func tearDown() { cluster?.shutdown() }

    /// Writes `bytes` on a fresh connection and reads until the server closes or goes quiet.
    private func raw(_ port: Int, _ bytes: [UInt8], closeWrite: Bool = false, quiet: Double = 1) throws -> String {
        let socket = try HTTPClient.connect(HTTPURL("http://127.0.0.1:\(port)")!, timeout: 5)
        socket.setReceiveTimeout(quiet)
        try socket.write(bytes)
        if closeWrite { shutdown(socket.fd, Int32(SHUT_WR)) }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            guard let count = try? buffer.withUnsafeMutableBytes({ try socket.read(into: $0) }), count > 0 else { break }
            received += buffer[0..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }

    private func statuses(_ text: String) -> [Int] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
    }

    func testPipelinedRequestsAnsweredInOrder() throws {
        let request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /store/missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        let answer = try raw(cluster.masterPort, Array(request.utf8))
        XCTAssertEqual(statuses(answer), [200, 404, 404])
        XCTAssertTrue(answer.contains("Connection: close"))
    }

    func testHTTP10ClientGetsAnswerAndClose() throws {
        let answer = try raw(cluster.masterPort, Array("GET /health HTTP/1.0\r\n\r\n".utf8))
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200"), answer)
        XCTAssertTrue(answer.contains("Connection: close"), answer)
    }

    func testMalformedRequestsGet400AndServerKeepsServing() throws {
        let cases: [(String, Int)] = [
            ("GARBAGE\r\n\r\n", 400),
            ("GET /health HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
            ("GET /health HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
            ("GET /health HTTP/2.0\r\n\r\n", 505),
            ("PUT /store/k HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("PUT /store/k HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("PUT /store/k HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            ("PUT /store/k HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("GET /health HTTP/1.1\r\nX: " + String(repeating: "a", count: 70_000) + "\r\n\r\n", 431),
            ("GET /health HTTP/1.1\r\n" + String(repeating: "X: y\r\n", count: 200) + "\r\n", 431),
            ("GET health HTTP/1.1\r\n\r\n", 400),
        ]
        for (request, status) in cases {
            let answer = try raw(cluster.masterPort, Array(request.utf8))
            XCTAssertEqual(statuses(answer).first, status, request.prefix(80).description)
        }
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/health").status, 200)
    }

    func testChunkedUploadThroughMaster() throws {
        let redirect = try HTTP.send("PUT", cluster.masterURL + "/store/chunky")
        let location = HTTPURL(redirect.headers["Location"]!)!
        let request = "PUT \(location.pathAndQuery) HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: ignored\r\n\r\n"
        let answer = try raw(location.port, Array(request.utf8))
        XCTAssertEqual(statuses(answer), [201], answer)
        XCTAssertEqual(try HTTP.follow("GET", cluster.masterURL + "/store/chunky").text, "hello world")
    }

    func testMasterAnswersExpectContinueWithRedirectOnly() throws {
        let request = "PUT /store/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
        let answer = try raw(cluster.masterPort, Array(request.utf8))
        XCTAssertEqual(statuses(answer), [307], answer)
        XCTAssertFalse(answer.contains("100 Continue"))
    }

    func testVolumeSendsContinueBeforeReadingBody() throws {
        let redirect = try HTTP.send("PUT", cluster.masterURL + "/store/expect")
        let location = HTTPURL(redirect.headers["Location"]!)!
        let socket = try HTTPClient.connect(location, timeout: 5)
        try socket.write(Array("PUT \(location.pathAndQuery) HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n".utf8))
        XCTAssertTrue(try socket.fill())
        XCTAssertTrue(String(decoding: socket.buffered, as: UTF8.self).hasPrefix("HTTP/1.1 100 Continue\r\n\r\n"))
        socket.consume(socket.bufferedCount)
        try socket.write([1, 2, 3])
        while !String(decoding: socket.buffered, as: UTF8.self).contains("\r\n\r\n") { XCTAssertTrue(try socket.fill()) }
        XCTAssertTrue(String(decoding: socket.buffered, as: UTF8.self).hasPrefix("HTTP/1.1 201"))
    }

    func testClientCutMidBodyLeavesNothingBehind() throws {
        let redirect = try HTTP.send("PUT", cluster.masterURL + "/store/cut")
        let location = HTTPURL(redirect.headers["Location"]!)!
        let socket = try HTTPClient.connect(location, timeout: 5)
        try socket.write(Array("PUT \(location.pathAndQuery) HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".utf8))
        try socket.write([UInt8](repeating: 7, count: 300_000))
        usleep(200_000)
        socket.close()
        let port = location.port
        try waitUntil("temporary file removed") { cluster.tmpFiles(port).isEmpty }
        XCTAssertEqual(cluster.valueFiles(port), [])
        XCTAssertEqual(try HTTP.send("GET", cluster.masterURL + "/store/cut").status, 404)
        XCTAssertEqual(try HTTP.send("GET", cluster.volumeURL(port) + "/health").status, 200)
    }

    func testRangesAndConditionalRequestsOnVolume() throws {
        XCTAssertEqual(try HTTP.follow("PUT", cluster.masterURL + "/store/r", body: Array("0123456789".utf8)).status, 201)
        let location = try HTTP.send("GET", cluster.masterURL + "/store/r").headers["Location"]!
        let cases: [(String, Int, String)] = [
            ("bytes=2-4", 206, "234"), ("bytes=7-", 206, "789"), ("bytes=-3", 206, "789"),
            ("bytes=5-100", 206, "56789"), ("bytes=20-", 416, ""), ("bytes=1-2,4-5", 200, "0123456789"),
            ("items=1-2", 200, "0123456789"),
        ]
        for (range, status, body) in cases {
            let answer = try HTTP.send("GET", location, headers: [("Range", range)])
            XCTAssertEqual(answer.status, status, range)
            if status != 416 { XCTAssertEqual(answer.text, body, range) }
        }
        let full = try HTTP.send("GET", location)
        let etag = full.headers["ETag"]!
        XCTAssertNotNil(full.headers["Last-Modified"])
        XCTAssertEqual(try HTTP.send("GET", location, headers: [("If-None-Match", etag)]).status, 304)
        XCTAssertEqual(try HTTP.send("GET", location, headers: [("If-None-Match", "\"other\"")]).status, 200)
    }
}
