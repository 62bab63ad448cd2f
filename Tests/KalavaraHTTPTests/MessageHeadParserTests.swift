@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

final class MessageHeadParserTests: XCTestCase {
    private func parse(_ text: String) throws -> HTTPRequest {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { buffer in
            guard let length = MessageHeadParser.headLength(in: buffer) else { throw HTTPError(0, "incomplete") }
            return try MessageHeadParser.parseRequest(UnsafeBufferPointer(rebasing: buffer[0..<length]))
        }
    }

    private func status(_ text: String) -> Int? {
        do { _ = try parse(text); return nil } catch let error as HTTPError { return error.status } catch { return -1 }
    }

    func testParsesRequestLineHeadersAndQuery() throws {
        let request = try parse("PUT /store/a%20b?x=1&y=2 HTTP/1.1\r\nHost: h\r\nContent-Length:  12 \r\nX-Empty:\r\n\r\n")
        XCTAssertEqual(request.method, "PUT")
        XCTAssertEqual(request.path, "/store/a%20b")
        XCTAssertEqual(request.query, "x=1&y=2")
        XCTAssertEqual(request.headers["content-length"], "12")
        XCTAssertEqual(request.headers["X-Empty"], "")
        XCTAssertEqual(request.framing, .length(12))
        XCTAssertTrue(request.keepAlive)
        XCTAssertFalse(request.expectsContinue)
    }

    func testAcceptsBareLineFeedsAndAbsoluteForm() throws {
        let request = try parse("GET http://example:6000/store/k?v=1 HTTP/1.0\nConnection: keep-alive\n\n")
        XCTAssertEqual(request.path, "/store/k")
        XCTAssertEqual(request.query, "v=1")
        XCTAssertEqual(request.minorVersion, 0)
        XCTAssertTrue(request.keepAlive)
        XCTAssertFalse(try parse("GET / HTTP/1.0\r\n\r\n").keepAlive)
        XCTAssertFalse(try parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n").keepAlive)
    }

    func testHeadLengthNeedsTheBlankLine() {
        for text in ["", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r"] {
            Array(text.utf8).withUnsafeBufferPointer { XCTAssertNil(MessageHeadParser.headLength(in: $0), text) }
        }
        Array("GET / HTTP/1.1\r\n\r\nBODY".utf8).withUnsafeBufferPointer {
            XCTAssertEqual(MessageHeadParser.headLength(in: $0), 18)
        }
    }

    func testRejectsMalformedHeads() {
        XCTAssertEqual(status("GET\r\n\r\n"), 400)
        XCTAssertEqual(status("GET  / HTTP/1.1\r\n\r\n"), 400)
        XCTAssertEqual(status("G(T / HTTP/1.1\r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTP/1.1 \r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTX/1.1\r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTP/2.0\r\n\r\n"), 505)
        XCTAssertEqual(status("GET / HTTP/1.1\r\nName : v\r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTP/1.1\r\n: v\r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTP/1.1\r\nA: b\u{01}c\r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), 400)
        XCTAssertEqual(status("GET nopath HTTP/1.1\r\n\r\n"), 400)
        XCTAssertEqual(status("GET /a\u{7F} HTTP/1.1\r\n\r\n"), 400)
        // RFC 9112 §3.2: HTTP/1.1 needs exactly one Host; HTTP/1.0 needs none.
        XCTAssertEqual(status("GET / HTTP/1.1\r\nX: y\r\n\r\n"), 400)
        XCTAssertEqual(status("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400)
        XCTAssertNil(status("GET / HTTP/1.1\r\nhOST: a\r\n\r\n"))
        XCTAssertNil(status("GET / HTTP/1.0\r\n\r\n"))
        XCTAssertEqual(status("GET / HTTP/1.1\r\n" + String(repeating: "A: b\r\n", count: HTTPLimits.maxHeaderCount + 1) + "\r\n"), 431)
        XCTAssertNil(status("GET / HTTP/1.1\r\nHost: h\r\n" + String(repeating: "A: b\r\n", count: HTTPLimits.maxHeaderCount - 1) + "\r\n"))
    }

    func testBodyFramingRules() {
        XCTAssertEqual(try parse("PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").framing, .chunked)
        XCTAssertEqual(try parse("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n").framing, .length(5))
        XCTAssertEqual(try parse("PUT / HTTP/1.1\r\nHost: h\r\n\r\n").framing, BodyFraming.none)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nContent-Length:\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), 501)
        XCTAssertEqual(status("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), 501)
        XCTAssertEqual(status("PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400)
        // An expectation other than 100-continue is ignored (RFC 9110 §10.1.1 allows it; S3 does).
        XCTAssertFalse(try parse("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: something\r\n\r\n").expectsContinue)
        XCTAssertTrue(try parse("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n").expectsContinue)
        XCTAssertFalse(try parse("PUT / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n").expectsContinue)
    }

    func testParsesResponses() throws {
        let bytes = Array("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://v/x\r\n\r\n".utf8)
        let parsed = try bytes.withUnsafeBufferPointer { try MessageHeadParser.parseResponse($0) }
        XCTAssertEqual(parsed.status, 307)
        XCTAssertEqual(parsed.headers["location"], "http://v/x")
        let bad = Array("HTTP/1.1 abc\r\n\r\n".utf8)
        XCTAssertThrowsError(try bad.withUnsafeBufferPointer { try MessageHeadParser.parseResponse($0) })
    }

    /// Seeded random bytes must only ever produce a request or an HTTPError, never a crash.
    func testRandomInputNeverCrashes() {
        var generator = SplitMix64(seed: 42)
        let alphabet = Array("GET PUT / HTTP/1.1\r\n:abc%0-;\t\u{0}\u{7F}".utf8)
        for _ in 0..<20_000 {
            let count = Int.random(in: 0..<200, using: &generator)
            var bytes = (0..<count).map { _ in
                Bool.random(using: &generator) ? alphabet.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
            }
            bytes += Array("\r\n\r\n".utf8)
            bytes.withUnsafeBufferPointer { buffer in
                guard let length = MessageHeadParser.headLength(in: buffer) else { return }
                do {
                    _ = try MessageHeadParser.parseRequest(UnsafeBufferPointer(rebasing: buffer[0..<length]))
                } catch {
                    XCTAssertTrue(error is HTTPError)
                }
            }
        }
    }
}
