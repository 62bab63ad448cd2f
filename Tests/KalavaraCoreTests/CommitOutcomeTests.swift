@testable import KalavaraCore
@testable import KalavaraHTTP
import XCTest

/// Protocol outcomes as values (issue 22): a commit's outcome and its HTTP form both ways,
/// the resolve verdict, and a volume's send-back redirect.
final class CommitOutcomeTests: XCTestCase {
    private let volume = "http://127.0.0.1:7001"

    /// Every outcome, with the status and one-line reason it has always been answered with
    /// (volumes' logs, clients and the docs rely on them) and its `Kalavara-Outcome`.
    private var table: [(outcome: CommitOutcome, status: Int, reason: String, header: String)] {
        [(.committed(previous: nil), 200, "committed", "committed"),
         (.committed(previous: 41), 200, "committed", "committed"),
         (.alreadyCommitted, 200, "committed", "already-committed"),
         (.deleted, 200, "deleted", "deleted"),
         (.alreadyDeleted, 200, "already deleted", "already-deleted"),
         (.nothingToDelete, 200, "nothing to delete", "nothing-to-delete"),
         (.superseded(by: 42, operation: .put), 409, "a newer version (42) rules this write out", "superseded; op=put; version=42"),
         (.superseded(by: 43, operation: .delete), 409, "a newer version (43) rules this delete out",
          "superseded; op=delete; version=43"),
         (.expired, 409, "ticket expired: commit arrived after the ticket lifetime", "expired"),
         (.conflict(version: 44), 409, "version 44 is already committed with other content or holders", "conflict; version=44"),
         (.volumeRemoved(volume), 409, "volume \(volume) has left the cluster", "volume-removed; volume=\(volume)")]
    }

    private func text(_ response: HTTPResponse) -> String {
        guard case .bytes(let bytes) = response.body else { return "" }
        return String(decoding: bytes, as: UTF8.self)
    }

    func testTheTableNamesEveryKind() {
        XCTAssertEqual(Set(table.map(\.outcome.kind)), Set(CommitOutcome.Kind.allCases))
    }

    func testEachOutcomeBecomesItsAnswerAndIsReadBackFromStatusAndHeader() throws {
        for (outcome, status, reason, header) in table {
            let response = outcome.response()
            XCTAssertEqual(response.status, status, "\(outcome)")
            XCTAssertEqual(text(response), reason + "\n", "\(outcome)")
            XCTAssertEqual(response.headers[VolumeHeaders.outcome], header, "\(outcome)")
            XCTAssertEqual(response.headers[VolumeHeaders.previousVersion], outcome.replaced.map(String.init), "\(outcome)")
            XCTAssertEqual(outcome.isAccepted, status == 200)
            XCTAssertEqual(CommitOutcome(status: response.status, headers: response.headers), outcome, "\(outcome)")
            // Read from status and headers alone: the text says nothing to a program.
            var bare = response.headers
            bare.set("Content-Type", "application/octet-stream")
            XCTAssertEqual(CommitOutcome(ClientResponse(status: status, headers: bare, body: Array("anything".utf8))), outcome)
        }
    }

    /// A volume passes the master's refusal on to its client: its own words first, then the
    /// master's reason, and the same header, which the gateway reads.
    func testARefusalPassedOnKeepsItsOutcome() throws {
        for (outcome, status, reason, header) in table where status == 409 {
            let passed = outcome.response(context: "master refused the commit")
            XCTAssertEqual(passed.status, 409)
            XCTAssertEqual(text(passed), "master refused the commit: \(reason)\n")
            XCTAssertEqual(passed.explanation, "master refused the commit: \(reason)")
            XCTAssertEqual(passed.headers[VolumeHeaders.outcome], header)
            XCTAssertEqual(CommitOutcome(status: passed.status, headers: passed.headers), outcome)
        }
    }

    func testAnAnswerWithoutAnOutcomeOrOneThatDoesNotFitIsNone() {
        func read(_ status: Int, _ value: String?) -> CommitOutcome? {
            var headers = HTTPHeaders()
            if let value { headers.set(VolumeHeaders.outcome, value) }
            return CommitOutcome(status: status, headers: headers)
        }
        XCTAssertNil(read(409, nil), "a 409 without the header (a replayed ticket on a volume) decides nothing")
        XCTAssertNil(read(400, nil))
        XCTAssertNil(read(200, "superseded; op=put; version=3"), "a refusal is a 409")
        XCTAssertNil(read(409, "committed"), "an acceptance is a 200")
        XCTAssertNil(read(409, "superseded"), "superseded names its version and operation")
        XCTAssertNil(read(409, "superseded; op=get; version=3"))
        XCTAssertNil(read(409, "superseded; op=put; version=x"))
        XCTAssertNil(read(409, "conflict"))
        XCTAssertNil(read(409, "volume-removed"))
        XCTAssertNil(read(409, "overruled"))
        XCTAssertNil(read(409, ""))
        XCTAssertNil(read(409, "expired; version"))
        XCTAssertEqual(read(409, "superseded ;version=3;  op=put"), .superseded(by: 3, operation: .put), "spaces and order are free")
    }

    func testResolveVerdictsTravelInTheirHeader() {
        for verdict in [Resolution.committed, .orphan] {
            let response = verdict.response
            XCTAssertEqual(response.status, 200)
            XCTAssertEqual(text(response), verdict.rawValue + "\n")
            XCTAssertEqual(Resolution(ClientResponse(status: 200, headers: response.headers, body: [])), verdict)
        }
        XCTAssertNil(Resolution(ClientResponse(status: 503, headers: Resolution.orphan.response.headers, body: [])))
        XCTAssertNil(Resolution(ClientResponse(status: 200, headers: HTTPHeaders(), body: Array("orphan\n".utf8))),
                     "the verdict is the header's, not the text's")
    }

    /// A volume's redirect back to the master names the volume (`not=`); the master and
    /// the gateway read it back through the same type, whatever the key.
    func testASendBackNamesTheVolumeItCameFrom() throws {
        for name in ["k", "a/../b", "with space", "ü?&=#", "not=here"] {
            let key = try Key(name)
            let text = SendBack.location(master: "http://127.0.0.1:6000", key: key, from: volume)
            let location = try XCTUnwrap(HTTPURL(text), text)
            XCTAssertEqual(SendBack.volume(in: location), volume, text)
            let query = location.pathAndQuery.split(separator: "?", maxSplits: 1).dropFirst().first
            XCTAssertEqual(try SendBack.volume(inQuery: query), volume)
        }
        // A read sent on to a volume is no send-back, even for a key that says `not=`.
        let onward = try XCTUnwrap(HTTPURL("http://127.0.0.1:7002/store/not%3Dhere?t=1&ver=5"))
        XCTAssertNil(SendBack.volume(in: onward))
        XCTAssertNil(SendBack.volume(in: try XCTUnwrap(HTTPURL("http://127.0.0.1:6000/store/k"))))
        XCTAssertNil(try SendBack.volume(inQuery: nil))
        XCTAssertNil(try SendBack.volume(inQuery: "ver=5"))
    }
}
