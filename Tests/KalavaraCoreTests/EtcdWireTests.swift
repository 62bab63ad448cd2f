import Foundation
@testable import KalavaraCore
import XCTest

/// Reading etcd's gateway answers (the bodies are what etcd 3.4.23 sent, trimmed of their
/// headers) and writing its requests. Fields that are zero are absent from etcd's JSON, and
/// everything that is there must have its type: a wrong answer is `.malformed`, not a crash.
final class EtcdWireTests: XCTestCase {
    private func decode<Answer: Decodable>(_ type: Answer.Type, _ json: String) throws -> Answer {
        try EtcdWire.decode(type, Array(json.utf8), call: "test")
    }

    private func assertMalformed<Answer: Decodable>(_ type: Answer.Type, _ json: String, line: UInt = #line) {
        XCTAssertThrowsError(try decode(type, json), line: line) { error in
            guard case .malformed = error as? Etcd.Failure else { return XCTFail("\(error)", line: line) }
        }
    }

    func testRangeWithAndWithoutEntries() throws {
        XCTAssertEqual(try decode(EtcdWire.Range.self, #"{"header":{"revision":"1"}}"#).entries, [])
        XCTAssertNil(try decode(EtcdWire.Range.self, #"{"header":{"revision":"1"}}"#).single)
        let found = try decode(EtcdWire.Range.self, """
            {"header":{"revision":"5"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"5","version":"2","value":"AAEC/w=="},\
            {"key":"Yw==","create_revision":"5","mod_revision":"5","version":"1","lease":"4111120482963114254"}],"count":"2"}
            """)
        XCTAssertEqual(try found.entries, [
            Etcd.Entry(key: "a", value: [0, 1, 2, 255], createRevision: 2, modRevision: 5, lease: 0),
            Etcd.Entry(key: "c", value: [], createRevision: 5, modRevision: 5, lease: 4111120482963114254),
        ])
        XCTAssertThrowsError(try found.single, "two entries for one key")
        // Numbers instead of strings are valid proto3 JSON too.
        XCTAssertEqual(try decode(EtcdWire.Range.self, #"{"kvs":[{"key":"YQ==","create_revision":7}]}"#).single?.createRevision, 7)
    }

    func testMalformedAnswers() {
        assertMalformed(EtcdWire.Range.self, "")
        assertMalformed(EtcdWire.Range.self, "[]")
        assertMalformed(EtcdWire.Range.self, #"{"kvs":{}}"#)
        assertMalformed(EtcdWire.Range.self, #"{"kvs":[{"value":"YQ=="}]}"#) // no key
        assertMalformed(EtcdWire.Range.self, #"{"kvs":[{"key":"not base64!"}]}"#)
        assertMalformed(EtcdWire.Range.self, #"{"kvs":[{"key":"YQ==","mod_revision":"12x"}]}"#)
        assertMalformed(EtcdWire.Range.self, #"{"kvs":[{"key":"YQ==","mod_revision":"99999999999999999999"}]}"#)
        assertMalformed(EtcdWire.Range.self, #"{"kvs":[{"key":"YQ==","lease":true}]}"#)
        assertMalformed(EtcdWire.Range.self, #"{"kvs":[{"key":"YQ==","lease":1.5}]}"#)
        assertMalformed(EtcdWire.LeaseGrant.self, #"{"TTL":"5"}"#) // no ID
        assertMalformed(EtcdWire.Txn.self, #"{"succeeded":"yes"}"#)
        assertMalformed(EtcdWire.Txn.self, #"{"responses":[{}]}"#)
        assertMalformed(EtcdWire.Txn.self, #"{"responses":[{"response_put":{},"response_delete_range":{}}]}"#)
        assertMalformed(EtcdWire.Txn.self, #"{"responses":[{"response_put":3}]}"#)
    }

    func testAKeyThatIsNotUTF8IsMalformed() throws {
        let range = try decode(EtcdWire.Range.self, #"{"kvs":[{"key":"/w=="}]}"#)
        XCTAssertThrowsError(try range.entries) { XCTAssertEqual($0 as? Etcd.Failure, .malformed("a key that is not UTF-8: /w==")) }
    }

    func testTransactionOutcome() throws {
        let then: [Etcd.Operation] = [.put("b", [120], lease: nil), .get("a")]
        let otherwise: [Etcd.Operation] = [.get("b"), .delete("b"), .get("z")]
        let succeeded = try decode(EtcdWire.Txn.self, """
            {"header":{"revision":"3"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}},\
            {"response_range":{"header":{"revision":"3"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"2","value":"AAEC/w=="}],"count":"1"}}]}
            """).outcome(then: then, else: otherwise)
        XCTAssertTrue(succeeded.succeeded)
        XCTAssertEqual(succeeded.gets, [Etcd.Entry(key: "a", value: [0, 1, 2, 255], createRevision: 2, modRevision: 2, lease: 0)])

        // A failed transaction has no "succeeded"; a range that found nothing no "kvs".
        let failed = try decode(EtcdWire.Txn.self, """
            {"header":{"revision":"4"},"responses":[{"response_range":{"header":{"revision":"3"},"kvs":[{"key":"Yg==","create_revision":"3",\
            "mod_revision":"3","value":"eA=="}],"count":"1"}},{"response_delete_range":{"header":{"revision":"4"},"deleted":"1"}},\
            {"response_range":{"header":{"revision":"4"}}}]}
            """).outcome(then: then, else: otherwise)
        XCTAssertFalse(failed.succeeded)
        XCTAssertEqual(failed.gets, [Etcd.Entry(key: "b", value: [120], createRevision: 3, modRevision: 3, lease: 0), nil])

        let empty = try decode(EtcdWire.Txn.self, #"{"header":{"revision":"4"}}"#).outcome(then: [.get("a")], else: [])
        XCTAssertFalse(empty.succeeded)
        XCTAssertEqual(empty.gets, [])

        // Responses that do not answer the branch's operations one for one.
        let mismatched = try decode(EtcdWire.Txn.self, #"{"succeeded":true,"responses":[{"response_put":{}}]}"#)
        XCTAssertThrowsError(try mismatched.outcome(then: [.get("a")], else: [])) {
            XCTAssertEqual($0 as? Etcd.Failure, .malformed("transaction answer: response_put answering a get"))
        }
        XCTAssertThrowsError(try mismatched.outcome(then: [], else: [])) {
            XCTAssertEqual($0 as? Etcd.Failure, .malformed("transaction answer: 1 responses to 0 operations"))
        }
    }

    func testLeaseAnswers() throws {
        let grant = try decode(EtcdWire.LeaseGrant.self, #"{"header":{"revision":"2"},"ID":"4111120482963114248","TTL":"5"}"#)
        XCTAssertEqual(grant.id.value, 4111120482963114248)
        XCTAssertNil(grant.error)

        let alive = try decode(EtcdWire.KeepAliveStream.self, #"{"result":{"header":{"revision":"4"},"ID":"4111120482963114254","TTL":"5"}}"#)
        XCTAssertEqual(alive.result?.seconds, 5)
        XCTAssertNil(alive.streamError)
        // etcd's answer for a lease it does not know: no TTL.
        let unknown = try decode(EtcdWire.KeepAliveStream.self, #"{"result":{"header":{"revision":"2"},"ID":"12345"}}"#)
        XCTAssertEqual(unknown.result?.seconds, 0)
        let failedStream = try decode(EtcdWire.KeepAliveStream.self,
                                      #"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#)
        XCTAssertEqual(failedStream.streamError?.status, 503)
        XCTAssertEqual(failedStream.streamError?.message, "etcdserver: no leader")

        XCTAssertEqual(try decode(EtcdWire.LeaseTTL.self, #"{"ID":"12345","TTL":"-1"}"#).seconds, -1)
        XCTAssertEqual(try decode(EtcdWire.LeaseTTL.self, #"{"ID":"12345","TTL":"3","grantedTTL":"5"}"#).seconds, 3)
    }

    func testErrorBodies() {
        XCTAssertEqual(Etcd.message(Array(#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#.utf8)),
                       "etcdserver: requested lease not found")
        XCTAssertEqual(Etcd.message(Array("Not Found\n".utf8)), "Not Found")
    }

    func testRequests() throws {
        func json(_ object: [String: Any]) throws -> NSDictionary {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(EtcdWire.encode(object))) as? NSDictionary)
        }
        XCTAssertEqual(try json(Etcd.compareRequest(.createRevision("a", equals: 0))),
                       ["key": "YQ==", "target": "CREATE", "result": "EQUAL", "create_revision": "0"])
        XCTAssertEqual(try json(Etcd.compareRequest(.value("a", equals: [0, 255]))),
                       ["key": "YQ==", "target": "VALUE", "result": "EQUAL", "value": "AP8="])
        XCTAssertEqual(try json(Etcd.compareRequest(.modRevision("a", equals: 9))),
                       ["key": "YQ==", "target": "MOD", "result": "EQUAL", "mod_revision": "9"])
        XCTAssertEqual(try json(Etcd.compareRequest(.lease("a", equals: 4111120482963114254))),
                       ["key": "YQ==", "target": "LEASE", "result": "EQUAL", "lease": "4111120482963114254"])
        XCTAssertEqual(try json(Etcd.operationRequest(.put("a", [1], lease: 7))),
                       ["request_put": ["key": "YQ==", "value": "AQ==", "lease": "7"]])
        XCTAssertEqual(try json(Etcd.operationRequest(.put("a", [], lease: nil))), ["request_put": ["key": "YQ==", "value": ""]])
        XCTAssertEqual(try json(Etcd.operationRequest(.delete("a"))), ["request_delete_range": ["key": "YQ=="]])
        XCTAssertEqual(try json(Etcd.operationRequest(.get("a"))), ["request_range": ["key": "YQ=="]])
    }

    func testPrefixRangeEnd() {
        XCTAssertEqual(EtcdWire.rangeEnd(prefix: "group/"), Array("group0".utf8))
        XCTAssertEqual(EtcdWire.rangeEnd(prefix: "a\u{7f}"), [0x61, 0x80])
        XCTAssertEqual(EtcdWire.rangeEnd(prefix: "é"), [0xc3, 0xaa]) // 0xc3 0xa9, last byte incremented
        XCTAssertEqual(EtcdWire.rangeEnd(prefix: ""), [0])
    }
}
