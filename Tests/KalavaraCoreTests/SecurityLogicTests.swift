import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

/// The pure logic of a signed cluster: call signatures, tickets, credentials.
final class SecurityLogicTests: XCTestCase {
    let secret = try! ClusterSecret(bytes: Array("0123456789abcdef-test".utf8))
    let other = try! ClusterSecret(bytes: Array("0123456789abcdef-other".utf8))

    private func request(_ method: String, _ target: String, _ headers: HTTPHeaders, length: Int = 0) throws -> HTTPRequest {
        var fields = headers.fields.map { ($0.name, $0.value) }
        fields.append(("Host", "x"))
        if length > 0 { fields.append(("Content-Length", String(length))) }
        return try HTTPRequest(method: method, target: target, minorVersion: 1, headers: HTTPHeaders(fields))
    }

    func testCallSignatureCoversMethodTargetDateBodyAndHeaders() throws {
        let now = 1_800_000_000.0
        var headers = HTTPHeaders([(VolumeHeaders.checksum, "abc")])
        SignedCall.sign(&headers, method: "PUT", target: "/internal/replica/k?t=1&ver=5", body: nil, length: 10, secret: secret, now: now)
        let good = try request("PUT", "/internal/replica/k?t=1&ver=5", headers, length: 10)
        XCTAssertEqual(SignedCall.verify(good, secret: secret, streamed: true, now: now + 5), .valid)
        // An unsigned payload is only for streamed routes.
        XCTAssertNotEqual(SignedCall.verify(good, secret: secret, streamed: false, now: now), .valid)
        XCTAssertNotEqual(SignedCall.verify(good, secret: other, streamed: true, now: now), .valid)
        // Stale either way.
        XCTAssertNotEqual(SignedCall.verify(good, secret: secret, streamed: true, now: now + SignedCall.window + 1), .valid)
        XCTAssertNotEqual(SignedCall.verify(good, secret: secret, streamed: true, now: now - SignedCall.window - 1), .valid)
        // Any change to what was signed breaks it.
        XCTAssertNotEqual(SignedCall.verify(try request("DELETE", "/internal/replica/k?t=1&ver=5", headers, length: 10),
                                            secret: secret, streamed: true, now: now), .valid)
        XCTAssertNotEqual(SignedCall.verify(try request("PUT", "/internal/replica/k?t=1&ver=6", headers, length: 10),
                                            secret: secret, streamed: true, now: now), .valid)
        XCTAssertNotEqual(SignedCall.verify(try request("PUT", "/internal/replica/k?t=1&ver=5", headers, length: 11),
                                            secret: secret, streamed: true, now: now), .valid)
        var tampered = headers
        tampered.set(VolumeHeaders.checksum, "abd")
        XCTAssertNotEqual(SignedCall.verify(try request("PUT", "/internal/replica/k?t=1&ver=5", tampered, length: 10),
                                            secret: secret, streamed: true, now: now), .valid)
        XCTAssertEqual(SignedCall.verify(try request("PUT", "/x", HTTPHeaders()), secret: secret), .unsigned)
    }

    func testSignedBodyMustMatch() throws {
        var headers = HTTPHeaders()
        SignedCall.sign(&headers, method: "POST", target: "/internal/wanted", body: Array("1 a".utf8), length: 3, secret: secret)
        let call = try request("POST", "/internal/wanted", headers, length: 3)
        XCTAssertEqual(SignedCall.verify(call, secret: secret), .valid)
        XCTAssertNoThrow(try SignedCall.verifyBody(call, Array("1 a".utf8), secret: secret))
        XCTAssertThrowsError(try SignedCall.verifyBody(call, Array("1 b".utf8), secret: secret))
        // A bodiless call's empty digest is checked at once.
        var empty = HTTPHeaders()
        SignedCall.sign(&empty, method: "POST", target: "/internal/commit?x", body: [], length: 0, secret: secret)
        XCTAssertEqual(SignedCall.verify(try request("POST", "/internal/commit?x", empty), secret: secret), .valid)
    }

    func testHealthAnswerIsBoundToTheCheck() throws {
        var check = HTTPHeaders()
        SignedCall.sign(&check, method: "GET", target: "/health", body: [], length: 0, secret: secret)
        let incoming = try request("GET", "/health", check)
        var answer = HTTPHeaders([(VolumeHeaders.freeBytes, "100")])
        SignedCall.signHealthAnswer(&answer, request: incoming, secret: secret)
        XCTAssertTrue(SignedCall.verifyHealthAnswer(answer, requestHeaders: check, secret: secret))
        XCTAssertFalse(SignedCall.verifyHealthAnswer(answer, requestHeaders: check, secret: other))
        var changed = answer
        changed.set(VolumeHeaders.freeBytes, "999999")
        XCTAssertFalse(SignedCall.verifyHealthAnswer(changed, requestHeaders: check, secret: secret))
        // The zone is signed: neither changed, nor added to an answer without one, nor stripped.
        var zoned = HTTPHeaders([(VolumeHeaders.freeBytes, "100"), (VolumeHeaders.zone, "rack1")])
        SignedCall.signHealthAnswer(&zoned, request: incoming, secret: secret)
        XCTAssertTrue(SignedCall.verifyHealthAnswer(zoned, requestHeaders: check, secret: secret))
        var moved = zoned
        moved.set(VolumeHeaders.zone, "rack2")
        XCTAssertFalse(SignedCall.verifyHealthAnswer(moved, requestHeaders: check, secret: secret))
        var added = answer
        added.set(VolumeHeaders.zone, "rack2")
        XCTAssertFalse(SignedCall.verifyHealthAnswer(added, requestHeaders: check, secret: secret))
        var stripped = HTTPHeaders([(VolumeHeaders.freeBytes, "100")])
        zoned[SignedCall.answerSignatureHeader].map { stripped.set(SignedCall.answerSignatureHeader, $0) }
        XCTAssertFalse(SignedCall.verifyHealthAnswer(stripped, requestHeaders: check, secret: secret))
        // Replayed to another check: its signature differs.
        var later = HTTPHeaders()
        SignedCall.sign(&later, method: "GET", target: "/health", body: [], length: 0, secret: secret, now: Date().timeIntervalSince1970 + 1)
        XCTAssertFalse(SignedCall.verifyHealthAnswer(answer, requestHeaders: later, secret: secret))
    }

    func testTicketSignatureIsForOneOperationOnOneKey() throws {
        let key = try Key("a/../b")
        let ticket = PlacementTicket(version: 42, master: "http://m:1", holders: ["http://v:1", "http://v:2"], requestID: "r1",
                                     expires: 2_000_000_000, length: 12).signed(for: .put, key, secret: secret)
        let parsed = try XCTUnwrap(try PlacementTicket(QueryParameters(Substring(ticket.query))))
        XCTAssertEqual(parsed, ticket)
        XCTAssertNotNil(try PlacementTicket.verified(parsed, for: .put, key, secret: secret, now: 1_900_000_000))
        XCTAssertThrowsError(try PlacementTicket.verified(parsed, for: .delete, key, secret: secret, now: 1_900_000_000))
        XCTAssertThrowsError(try PlacementTicket.verified(parsed, for: .put, try Key("a/b"), secret: secret, now: 1_900_000_000))
        XCTAssertThrowsError(try PlacementTicket.verified(parsed, for: .put, key, secret: other, now: 1_900_000_000))
        XCTAssertThrowsError(try PlacementTicket.verified(parsed, for: .put, key, secret: secret, now: 2_000_000_001))
        for change in [{ (t: inout PlacementTicket) in t.version += 1 }, { $0.holders.reverse() }, { $0.master = "http://evil:1" },
                       { $0.length = 13 }, { $0.expires = 2_100_000_000 }] {
            var forged = parsed
            change(&forged)
            XCTAssertThrowsError(try PlacementTicket.verified(forged, for: .put, key, secret: secret, now: 1_900_000_000))
        }
        // Open clusters take tickets as they are; a signed one refuses a missing ticket.
        XCTAssertNil(try PlacementTicket.verified(nil, for: .read, key, secret: nil))
        XCTAssertThrowsError(try PlacementTicket.verified(nil, for: .read, key, secret: secret))
        // A read ticket stays short.
        let read = PlacementTicket(version: 7, expires: 2_000_000_000).signed(for: .read, key, secret: secret)
        XCTAssertEqual(read.query, "t=1&ver=7&x=2000000000&sig=\(read.signature!)")
    }

    func testReadTicketsAreSignedOncePerKeyVersionAndPeriod() throws {
        let cache = ReadTicketCache(secret: secret, lifetime: 600)
        let key = try Key("hot")
        let now = 1_800_000_007.0
        let first = cache.query(key, version: 5, now: now)
        XCTAssertEqual(cache.query(key, version: 5, now: now + 10), first, "same period: the same ticket")
        XCTAssertNotEqual(cache.query(key, version: 5, now: now + 31), first, "next period: a new expiry")
        XCTAssertNotEqual(cache.query(key, version: 6, now: now), first)
        XCTAssertNotEqual(cache.query(try Key("cold"), version: 5, now: now), first)
        let ticket = try XCTUnwrap(try PlacementTicket(QueryParameters(Substring(first))))
        XCTAssertNotNil(try PlacementTicket.verified(ticket, for: .read, key, secret: secret, now: now + 600))
        XCTAssertThrowsError(try PlacementTicket.verified(ticket, for: .read, key, secret: secret, now: now + 631))
        XCTAssertThrowsError(try PlacementTicket.verified(ticket, for: .read, try Key("cold"), secret: secret, now: now))
        let short = ReadTicketCache(secret: secret, lifetime: 2)
        XCTAssertLessThanOrEqual(Double(short.expiry(at: now)), now + 2.5)
    }

    func testAnnouncedLengthChecks() throws {
        let ticket = PlacementTicket(version: 1, length: 5)
        XCTAssertNoThrow(try ticket.checkBodyLength(.length(5)))
        XCTAssertThrowsError(try ticket.checkBodyLength(.length(0)))
        XCTAssertThrowsError(try ticket.checkBodyLength(.none))
        XCTAssertNoThrow(try ticket.checkBodyLength(.chunked))
        XCTAssertThrowsError(try ticket.checkReceived(4))
        let nonEmpty = PlacementTicket(version: 1, length: -1)
        XCTAssertThrowsError(try nonEmpty.checkReceived(0))
        XCTAssertNoThrow(try nonEmpty.checkReceived(1))
        XCTAssertNoThrow(try PlacementTicket(version: 1).checkReceived(0))
    }

    func testCredentialsParseAndCheck() throws {
        let table = try Credentials.parse("# users\nalice s3cret read,write\n\nbob pw admin # trailing\n", source: "f")
        XCTAssertEqual(table.count, 2)
        XCTAssertEqual(table["alice"]?.rights, [.read, .write])
        for bad in ["alice", "alice pw read extra", "alice pw fly", "a:b pw read", "x p read\nx q read"] {
            XCTAssertThrowsError(try Credentials.parse(bad, source: "f"), bad) { error in
                XCTAssertFalse("\(error)".contains(" pw "), "a secret in an error: \(error)")
            }
        }
        let path = NSTemporaryDirectory() + "creds-\(UUID().uuidString)"
        try Data("alice s3cret read,write\nbob pw admin\n".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let credentials = try Credentials(file: path)
        func basic(_ text: String) -> String { "Basic " + Data(text.utf8).base64EncodedString() }
        XCTAssertEqual(credentials.check(authorization: basic("alice:s3cret"), needs: .write), .granted(user: "alice"))
        XCTAssertEqual(credentials.check(authorization: basic("alice:s3cret"), needs: .admin), .forbidden(user: "alice"))
        XCTAssertEqual(credentials.check(authorization: basic("alice:wrong"), needs: .read), .unauthenticated)
        XCTAssertEqual(credentials.check(authorization: basic("carol:s3cret"), needs: .read), .unauthenticated)
        XCTAssertEqual(credentials.check(authorization: nil, needs: .read), .unauthenticated)
        XCTAssertEqual(credentials.check(authorization: "Basic !!!", needs: .read), .unauthenticated)
        XCTAssertEqual(credentials.check(authorization: basic("bob:pw:with:colons"), needs: .admin), .unauthenticated)
        // Reload: a broken file keeps the old table.
        try Data("broken\n".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try credentials.reload())
        XCTAssertEqual(credentials.check(authorization: basic("bob:pw"), needs: .admin), .granted(user: "bob"))
    }

    func testSecretIsNeverPrinted() throws {
        XCTAssertEqual("\(secret)", "<cluster secret>")
        XCTAssertFalse(String(reflecting: secret).contains("0123456789"))
        XCTAssertThrowsError(try ClusterSecret(bytes: Array("short".utf8)))
    }

    func testIndexRecordKeepsItsChecksum() throws {
        for record in [IndexRecord(version: 9, size: 3, holders: [1, 2], checksum: 0xDEADBEEF),
                       IndexRecord(version: 9, size: 3, holders: [1], floor: 4, checksum: 7),
                       IndexRecord(version: 9, size: 3, holders: [1], floor: 4)] {
            XCTAssertEqual(IndexRecord(decoding: record.encoded()), record)
        }
    }
}
