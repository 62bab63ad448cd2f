import Foundation
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

/// Body decoding over a real socket pair: what the peer writes is what the body yields.
final class MessageBodyTests: XCTestCase {
    private func body(_ framing: BodyFraming, peerWrites bytes: [UInt8], thenClose: Bool = true) throws -> MessageBody {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        let reader = BufferedSocket(fd: fds[0])
        reader.setReceiveTimeout(2)
        _ = bytes.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
        if thenClose { close(fds[1]) }
        sockets.append(reader)
        return MessageBody(socket: reader, framing: framing)
    }
    private var sockets: [BufferedSocket] = []

    func testContentLength() throws {
        let body = try body(.length(5), peerWrites: Array("helloEXTRA".utf8))
        XCTAssertEqual(try body.readAll(limit: 100), Array("hello".utf8))
        XCTAssertTrue(body.isComplete)
    }

    func testChunkedWithExtensionsAndTrailers() throws {
        let wire = "5;name=value\r\nhello\r\n7 \r\n, chunk\r\n3 ;x\r\ned!\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT"
        let body = try body(.chunked, peerWrites: Array(wire.utf8))
        XCTAssertEqual(String(decoding: try body.readAll(limit: 100), as: UTF8.self), "hello, chunked!")
        XCTAssertTrue(body.isComplete)
    }

    func testAnOverlongChunkSizeLineIs400EvenInOneRead() throws {
        // 1 followed by 60,000 spaces of "whitespace" and an extension: one line, one write.
        let line = "1" + String(repeating: " ", count: 100) + ";" + String(repeating: "x", count: 60_000) + "\r\nA\r\n0\r\n\r\n"
        let body = try body(.chunked, peerWrites: Array(line.utf8))
        XCTAssertThrowsError(try body.readAll(limit: 100)) { error in
            XCTAssertEqual((error as? HTTPError)?.status, 400)
        }
    }

    func testMalformedChunksAre400() throws {
        for wire in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX\r\n0\r\n\r\n", "\r\n", "fffffffffffffffff\r\n",
                     "5 garbage\r\nhello\r\n0\r\n\r\n"] {
            let body = try body(.chunked, peerWrites: Array(wire.utf8))
            XCTAssertThrowsError(try body.readAll(limit: 100), wire) { error in
                XCTAssertEqual((error as? HTTPError)?.status, 400, wire)
            }
        }
    }

    func testEarlyEndIsAConnectionError() throws {
        for (framing, wire) in [(BodyFraming.length(10), "short"), (.chunked, "5\r\nhel")] {
            let body = try body(framing, peerWrites: Array(wire.utf8))
            XCTAssertThrowsError(try body.readAll(limit: 100)) { error in
                XCTAssertEqual(error as? ConnectionError, .closedByPeer)
            }
        }
    }

    func testStalledPeerTimesOut() throws {
        let body = try body(.length(10), peerWrites: Array("abc".utf8), thenClose: false)
        sockets.last!.setReceiveTimeout(0.2)
        XCTAssertThrowsError(try body.readAll(limit: 100)) { error in
            XCTAssertEqual(error as? ConnectionError, .timedOut)
        }
    }

    func testReadAllRefusesOversizedBody() throws {
        let body = try body(.length(10), peerWrites: Array("0123456789".utf8))
        XCTAssertThrowsError(try body.readAll(limit: 5)) { XCTAssertEqual(($0 as? HTTPError)?.status, 413) }
    }
}
