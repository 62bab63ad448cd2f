import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import TestSupport
import XCTest

/// `Etcd` against a real etcd (Debian's etcd-server 3.4) on loopback: keys, leases,
/// transactions, and endpoints that are dead, hung, failing or restarted.
final class EtcdTests: XCTestCase {
    private var server: EtcdServer!
    private var etcd: Etcd!

    override func setUpWithError() throws {
        server = try EtcdServer()
        etcd = Etcd(endpoints: [server.endpoint], timeout: 2)
    }

    override func tearDown() {
        server = nil
        etcd = nil
    }

    /// An endpoint nothing listens on.
    private func closedEndpoint() -> HTTPURL { HTTPURL("http://127.0.0.1:\(freeLoopbackPort())")! }

    private func assertFailure(_ expected: Etcd.Failure, _ call: () throws -> some Any, line: UInt = #line) {
        XCTAssertThrowsError(try call(), line: line) { XCTAssertEqual($0 as? Etcd.Failure, expected, line: line) }
    }

    private func assertUnreachable(_ call: () throws -> some Any, line: UInt = #line) {
        XCTAssertThrowsError(try call(), line: line) { error in
            guard case .unreachable = error as? Etcd.Failure else { return XCTFail("\(error)", line: line) }
        }
    }

    func testPutGetListDeleteWithBinaryValues() throws {
        let everyByte = (0...255).map(UInt8.init)
        try etcd.put("group/a", everyByte)
        try etcd.put("group/b", [])
        try etcd.put("group/c/d", [0])
        try etcd.put("groupies", [1])
        try etcd.put("other", [2])

        let a = try XCTUnwrap(etcd.get("group/a"))
        XCTAssertEqual(a.key, "group/a")
        XCTAssertEqual(a.value, everyByte)
        XCTAssertEqual(a.lease, 0)
        XCTAssertGreaterThan(a.createRevision, 0)
        XCTAssertEqual(a.modRevision, a.createRevision)
        XCTAssertEqual(try etcd.get("group/b")?.value, [])
        XCTAssertNil(try etcd.get("group/none"))

        XCTAssertEqual(try etcd.list(prefix: "group/").map(\.key), ["group/a", "group/b", "group/c/d"])
        XCTAssertEqual(try etcd.list(prefix: "group").map(\.key), ["group/a", "group/b", "group/c/d", "groupies"])
        XCTAssertEqual(try etcd.list(prefix: "").count, 5)
        XCTAssertEqual(try etcd.list(prefix: "nothing/"), [])

        try etcd.put("group/a", [9])
        let changed = try XCTUnwrap(etcd.get("group/a"))
        XCTAssertEqual(changed.value, [9])
        XCTAssertEqual(changed.createRevision, a.createRevision)
        XCTAssertGreaterThan(changed.modRevision, a.modRevision)

        try etcd.delete("group/a")
        try etcd.delete("group/a") // deleting what is gone is no error
        XCTAssertNil(try etcd.get("group/a"))
        XCTAssertEqual(try etcd.list(prefix: "group/").map(\.key), ["group/b", "group/c/d"])
    }

    /// A 1-second lease left alone and a 2-second one kept alive: the first one's key is gone
    /// within etcd's expiry check (every 500 ms) of its TTL, the kept one's stays, and
    /// keepAlive of the expired lease says so.
    func testLeasedKeysLiveAsLongAsTheirLease() throws {
        let dropped = try etcd.grantLease(ttl: 1)
        let kept = try etcd.grantLease(ttl: 2)
        XCTAssertNotEqual(dropped, kept)
        try etcd.put("dropped", [1], lease: dropped)
        try etcd.put("kept", [2], lease: kept)
        XCTAssertEqual(try etcd.get("kept")?.lease, kept)

        let start = monotonicSeconds()
        while try etcd.get("dropped") != nil {
            XCTAssertLessThan(monotonicSeconds() - start, 5, "a key of a lease without keepalive still there")
            XCTAssertEqual(try etcd.keepAlive(kept), 2)
            usleep(250_000)
        }
        for _ in 0..<12 { // 3 s more: longer than the TTL
            XCTAssertEqual(try etcd.keepAlive(kept), 2)
            usleep(250_000)
        }
        XCTAssertEqual(try etcd.get("kept")?.value, [2])
        assertFailure(.leaseExpired) { try etcd.keepAlive(dropped) }
        XCTAssertNil(try etcd.timeToLive(dropped))
        XCTAssertEqual(try etcd.keepAlive(kept), 2)
        XCTAssertNotNil(try etcd.timeToLive(kept))

        try etcd.revoke(kept)
        XCTAssertNil(try etcd.get("kept"))
        assertFailure(.leaseExpired) { try etcd.keepAlive(kept) }
        try etcd.revoke(kept) // gone already: no error
        // A key cannot be put under a lease etcd does not know.
        XCTAssertThrowsError(try etcd.put("late", [3], lease: kept)) { error in
            guard case .refused(404, let message) = error as? Etcd.Failure else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("lease not found"), message)
        }
    }

    func testTransactions() throws {
        let lease = try etcd.grantLease(ttl: 30)
        // Create if absent: the election's claim.
        let claim = { [etcd = etcd!] (value: [UInt8]) in
            try etcd.transaction(if: [.createRevision("leader", equals: 0)],
                                 then: [.put("leader", value, lease: lease)], else: [.get("leader")])
        }
        let first = try claim([1])
        XCTAssertTrue(first.succeeded)
        XCTAssertEqual(first.gets, [])
        let second = try claim([2])
        XCTAssertFalse(second.succeeded)
        let holder = try XCTUnwrap(second.gets.first ?? nil)
        XCTAssertEqual(holder.value, [1])
        XCTAssertEqual(holder.lease, lease)

        // Value and lease equality, reads on both sides.
        let wrongValue = try etcd.transaction(if: [.value("leader", equals: [9])], then: [.delete("leader")],
                                              else: [.get("leader"), .get("absent")])
        XCTAssertFalse(wrongValue.succeeded)
        XCTAssertEqual(wrongValue.gets.map { $0?.value }, [[1], nil])
        let rightValue = try etcd.transaction(if: [.value("leader", equals: [1]), .lease("leader", equals: lease)],
                                              then: [.put("in-sync", [7, 0], lease: nil), .get("in-sync")])
        XCTAssertTrue(rightValue.succeeded)
        XCTAssertEqual(rightValue.gets.map { $0?.value }, [[7, 0]])
        let wrongLease = try etcd.transaction(if: [.lease("leader", equals: lease + 1)], then: [.delete("leader")])
        XCTAssertFalse(wrongLease.succeeded)
        XCTAssertNotNil(try etcd.get("leader"))

        // Compare-and-swap on the modification revision.
        let entry = try XCTUnwrap(etcd.get("in-sync"))
        XCTAssertTrue(try etcd.transaction(if: [.modRevision("in-sync", equals: entry.modRevision)],
                                           then: [.put("in-sync", [8], lease: nil)]).succeeded)
        XCTAssertFalse(try etcd.transaction(if: [.modRevision("in-sync", equals: entry.modRevision)],
                                            then: [.put("in-sync", [9], lease: nil)]).succeeded)
        XCTAssertEqual(try etcd.get("in-sync")?.value, [8])

        // Stepping down: delete only what is still ours.
        XCTAssertTrue(try etcd.transaction(if: [.lease("leader", equals: lease)], then: [.delete("leader")]).succeeded)
        XCTAssertNil(try etcd.get("leader"))
    }

    func testADeadEndpointIsSkipped() throws {
        let client = Etcd(endpoints: [closedEndpoint(), server.endpoint], timeout: 2)
        try client.put("k", [1])
        XCTAssertEqual(try client.get("k")?.value, [1])
        XCTAssertEqual(try client.keepAlive(try client.grantLease(ttl: 5)), 5)
    }

    func testAllEndpointsDeadIsUnreachableWithinTheTimeout() throws {
        let client = Etcd(endpoints: [closedEndpoint(), closedEndpoint()], timeout: 1)
        let start = monotonicSeconds()
        XCTAssertThrowsError(try client.get("k")) { error in
            guard case .unreachable(let reason) = error as? Etcd.Failure else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("refused"), reason)
        }
        XCTAssertLessThan(monotonicSeconds() - start, 1.2)
    }

    /// A stopped etcd accepts connections and never answers: a call gives up after its
    /// timeout, over all its endpoints together, not each one's.
    func testAHungEtcdCostsOneTimeout() throws {
        let client = Etcd(endpoints: [server.endpoint, server.endpoint, server.endpoint], timeout: 1)
        try client.put("k", [1])
        server.pause()
        let start = monotonicSeconds()
        assertUnreachable { try client.get("k") }
        let elapsed = monotonicSeconds() - start
        XCTAssertGreaterThan(elapsed, 0.9)
        XCTAssertLessThan(elapsed, 1.8) // not a timeout per endpoint
        server.resume()
        XCTAssertEqual(try client.get("k")?.value, [1])
    }

    /// Endpoints that answer 503, or a keepalive stream that failed with 503 (etcd without a
    /// leader), are passed over; a 200 that is not etcd's JSON is malformed, not retried.
    func testFailingEndpointsArePassedOver() throws {
        let unavailable = try stub(#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#, status: 503)
        defer { unavailable.stop() }
        let failedStream = try stub(#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#, status: 200)
        defer { failedStream.stop() }
        let garbage = try stub("<html>", status: 200)
        defer { garbage.stop() }

        let stubs = [unavailable, failedStream].map { HTTPURL("http://127.0.0.1:\($0.boundPort)")! }
        assertUnreachable { try Etcd(endpoints: stubs).keepAlive(1) }
        let lease = try etcd.grantLease(ttl: 5)
        XCTAssertEqual(try Etcd(endpoints: stubs + [server.endpoint]).keepAlive(lease), 5)

        let confused = Etcd(endpoints: [HTTPURL("http://127.0.0.1:\(garbage.boundPort)")!, server.endpoint])
        XCTAssertThrowsError(try confused.get("k")) { error in
            guard case .malformed = error as? Etcd.Failure else { return XCTFail("\(error)") }
        }
    }

    /// An HTTP server that answers every POST with `status` and `body`.
    private func stub(_ body: String, status: Int) throws -> HTTPServer {
        let server = HTTPServer(configuration: HTTPServer.Configuration(host: "127.0.0.1", port: 0), router: Router([
            Route("etcd", .prefix("/v3/"), methods: ["POST"], on: .eventLoop) { _, _ in .text(status, body) },
        ]), metrics: Metrics())
        try server.start()
        return server
    }

    /// etcd killed (or stopped) and started again on its data: the client (whose pooled
    /// connection died) fails while it is down and works again after, with the data and
    /// leases it had.
    func testTheClientWorksAgainAfterARestart() throws {
        let lease = try etcd.grantLease(ttl: 30)
        try etcd.put("k", [1, 2], lease: lease)
        server.kill()
        assertUnreachable { try etcd.get("k") }
        try server.restart()
        XCTAssertEqual(try etcd.get("k")?.value, [1, 2])
        XCTAssertEqual(try etcd.keepAlive(lease), 30)
        try etcd.put("k2", [3])
        XCTAssertEqual(try etcd.list(prefix: "k").map(\.key), ["k", "k2"])

        server.stop() // and a clean shutdown, the same
        assertUnreachable { try etcd.get("k") }
        try server.restart()
        XCTAssertEqual(try etcd.list(prefix: "k").map(\.key), ["k", "k2"])
    }
}
