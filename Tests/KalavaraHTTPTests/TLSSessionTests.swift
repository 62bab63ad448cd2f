import Foundation
@testable import KalavaraHTTP
import TestSupport
import XCTest

/// The TLS layer of `BufferedSocket` driven by hand over a socket pair, one step at a
/// time on one thread: what the event loop sees when OpenSSL wants to read (a handshake
/// before the client's hello), and when it wants to write (a peer that does not read).
final class TLSSessionTests: XCTestCase {
    private var certificates: TestCertificates!
    private var directory = ""

    override func setUpWithError() throws {
        try require(TestCertificates.available, "openssl is needed to make the test certificates")
        directory = NSTemporaryDirectory() + "kalavara-tls-" + UUID().uuidString
        certificates = try TestCertificates(directory: directory)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A server and a client socket over a connected pair, TLS started on both, nothing sent.
    private func pair() throws -> (server: BufferedSocket, client: BufferedSocket) {
        var ends: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends), 0)
        let leaf = try certificates.leaf("server", serial: 3)
        let server = BufferedSocket(fd: ends[0]), client = BufferedSocket(fd: ends[1])
        XCTAssertTrue(server.startTLS(try TLSContext.server(certificate: leaf.certificate, key: leaf.key), server: true))
        XCTAssertTrue(client.startTLS(try TLSContext.client(authority: certificates.authority), server: false, host: "127.0.0.1"))
        return (server, client)
    }

    /// Alternates the two sides' handshakes until both are done (each step never blocks).
    private func shakeHands(_ server: BufferedSocket, _ client: BufferedSocket) throws {
        for _ in 0..<10 {
            let clientStep = try XCTUnwrap(client.tls).handshake()
            XCTAssertNotEqual(server.fillWithoutBlocking(), .closed)
            if clientStep == .done(0), try XCTUnwrap(server.tls).established { return }
        }
        XCTFail("the handshake did not finish")
    }

    func testHandshakeWaitsForInputWithoutBlocking() throws {
        let (server, client) = try pair()
        // Nothing from the client yet: OpenSSL wants to read, the loop keeps waiting.
        XCTAssertEqual(server.fillWithoutBlocking(), .nothingYet)
        XCTAssertFalse(server.waitsToWrite)
        XCTAssertEqual(try XCTUnwrap(client.tls).handshake(), .wantRead, "the client's hello is out; it waits for the server")
        try shakeHands(server, client)
        try client.write(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        XCTAssertEqual(server.fillWithoutBlocking(), .data)
        XCTAssertEqual(String(decoding: server.buffered, as: UTF8.self), "GET / HTTP/1.1\r\n\r\n")
    }

    func testPartialWritesResumeFromACopyOfTheRest() throws {
        let (server, client) = try pair()
        try shakeHands(server, client)
        // More than a socket pair buffers: the non-blocking send stops where OpenSSL wants
        // to write, and the rest goes out later from another buffer (as a worker's does).
        let answer = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let sent = try XCTUnwrap(answer.withUnsafeBytes { server.sendWithoutBlocking($0) })
        XCTAssertGreaterThan(sent, 0)
        XCTAssertLessThan(sent, answer.count, "a socket pair does not take 4 MiB at once")
        let rest = Array(answer[sent...])
        let received = Received()
        let done = DispatchSemaphore(value: 0)
        client.setReceiveTimeout(10)
        Thread { [answer] in
            var piece = [UInt8](repeating: 0, count: 65536)
            while received.bytes.count < answer.count {
                let count = (try? piece.withUnsafeMutableBytes { try client.read(into: $0) }) ?? 0
                if count == 0 { break }
                received.bytes.append(contentsOf: piece[0..<count])
            }
            done.signal()
        }.start()
        server.setSendTimeout(10)
        try server.write(rest)
        XCTAssertEqual(done.wait(timeout: .now() + 20), .success)
        XCTAssertTrue(received.bytes == answer, "every byte, in order, once")
    }
}

/// What the reading thread collected; read by the test only after it signalled.
private final class Received: @unchecked Sendable {
    var bytes: [UInt8] = []
}
