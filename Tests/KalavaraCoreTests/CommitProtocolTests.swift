import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

/// The master's commit rules, driven directly (no HTTP): versions, tombstones, fences,
/// removal queue and tombstone expiry.
final class CommitProtocolTests: XCTestCase {
    var directory: String!
    var master: Master!
    let a = "http://127.0.0.1:7001", b = "http://127.0.0.1:7002", c = "http://127.0.0.1:7003"

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "kalavara-commit-" + UUID().uuidString
        var configuration = MasterConfiguration()
        configuration.databasePath = directory
        configuration.volumes = [a, b, c]
        configuration.ticketLifetime = 0.5
        master = try Master(configuration: configuration)
    }

    override func tearDown() {
        master.index.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func query(_ pairs: [(String, String)]) -> QueryParameters {
        var parameters = QueryParameters()
        for (name, value) in pairs { parameters.add(name, value) }
        return parameters
    }

    private func put(_ key: String, _ version: UInt64, holders: [String]) throws -> Int {
        try master.commit(query([("op", "put"), ("key", key), ("ver", String(version)), ("size", "1"),
                                 ("h", holders.joined(separator: ","))])).status
    }

    private func delete(_ key: String, _ version: UInt64) throws -> Int {
        try master.commit(query([("op", "delete"), ("key", key), ("ver", String(version))])).status
    }

    private func commit(_ op: CommitOperation, _ key: String, _ version: UInt64, holders: [String] = [], crc: String = "1")
        throws -> CommitOutcome {
        try master.commit(query([("op", op.rawValue), ("key", key), ("ver", String(version)), ("size", "1"), ("crc", crc),
                                 ("h", holders.joined(separator: ","))]))
    }

    private func resolve(_ key: String, _ version: UInt64, _ holder: String) throws -> String {
        let response = try master.resolve(query([("key", key), ("ver", String(version)), ("h", holder)]))
        guard case .bytes(let body) = response.body else { return "" }
        return String(decoding: body, as: UTF8.self)
    }

    private func record(_ key: String) throws -> IndexRecord? { try master.index.record(for: try Key(key)) }

    func testNewerVersionWinsAndCommitsAreIdempotent() throws {
        let v1 = try master.clock.next(), v2 = try master.clock.next()
        XCTAssertEqual(try put("k", v2, holders: [a]), 200)
        XCTAssertEqual(try put("k", v1, holders: [a]), 409, "an older write that commits late loses")
        XCTAssertEqual(try put("k", v2, holders: [a]), 200, "a retried commit is accepted")
        XCTAssertEqual(try put("k", v2, holders: [b]), 409, "a version names one set of holders")
        XCTAssertEqual(try record("k")?.version, v2)
        let future = master.clock.lastIssued + 1000
        XCTAssertThrowsError(try put("k", future, holders: [a]), "versions never issued are refused")
        XCTAssertThrowsError(try put("k", try master.clock.next(), holders: [a, a]))
        XCTAssertThrowsError(try put("k", try master.clock.next(), holders: ["http://127.0.0.1:9"]))
    }

    /// What each rule decides, as the value the volume and the gateway switch on.
    func testEachRuleDecidesItsOutcome() throws {
        let v1 = try master.clock.next(), v2 = try master.clock.next()
        XCTAssertEqual(try commit(.put, "k", v1, holders: [a]), .committed(previous: nil))
        XCTAssertEqual(try commit(.put, "k", v1, holders: [a]), .alreadyCommitted, "a volume retrying after a lost answer")
        XCTAssertEqual(try commit(.put, "k", v1, holders: [a], crc: "2"), .conflict(version: v1))
        XCTAssertEqual(try commit(.put, "k", v2, holders: [b]), .committed(previous: v1))
        XCTAssertEqual(try commit(.put, "k", v1, holders: [a]), .superseded(by: v2, operation: .put))
        XCTAssertEqual(try commit(.delete, "k", v1), .superseded(by: v2, operation: .delete))
        let v3 = try master.clock.next()
        XCTAssertEqual(try commit(.delete, "k", v3), .deleted)
        XCTAssertEqual(try commit(.delete, "k", v3), .alreadyDeleted)
        XCTAssertEqual(try commit(.put, "k", v2, holders: [b]), .superseded(by: v3, operation: .put), "a tombstone rules out older writes")
        XCTAssertEqual(try commit(.delete, "never-written", try master.clock.next()), .nothingToDelete)
        try master.registry.setMode(XCTUnwrap(master.registry.id(of: c)), .removed)
        XCTAssertEqual(try commit(.put, "k", try master.clock.next(), holders: [a, c]), .volumeRemoved(c))
        let late = try master.clock.next()
        usleep(600_000) // past the 0.5 s ticket lifetime
        XCTAssertEqual(try commit(.put, "late", late, holders: [a]), .expired)
        XCTAssertEqual(try commit(.delete, "k", late), .expired)
    }

    /// Healing's commit of new holders is refused whenever the record changed since it was
    /// read, and says how: a holder set that changed, or a key that moved on.
    func testTheHolderCommitSaysWhatChangedMeanwhile() throws {
        let ids = try [a, b, c].map { try XCTUnwrap(master.registry.id(of: $0)) }
        let key = try Key("k"), v1 = try master.clock.next()
        XCTAssertEqual(try put("k", v1, holders: [a]), 200)
        XCTAssertEqual(try master.commitHolders(key, version: v1, expected: [ids[0]], new: [ids[0], ids[1]]), .committed)
        XCTAssertEqual(try record("k")?.holders, [ids[0], ids[1]])
        XCTAssertEqual(try master.commitHolders(key, version: v1, expected: [ids[0]], new: [ids[2]]),
                       .holdersChanged([ids[0], ids[1]]))
        let v2 = try master.clock.next()
        XCTAssertEqual(try put("k", v2, holders: [c]), 200)
        XCTAssertEqual(try master.commitHolders(key, version: v1, expected: [ids[0], ids[1]], new: [ids[1]]), .superseded)
        XCTAssertEqual(try delete("k", try master.clock.next()), 200)
        XCTAssertEqual(try master.commitHolders(key, version: v2, expected: [ids[2]], new: [ids[1]]), .superseded)
        XCTAssertEqual(try master.commitHolders(try Key("absent"), version: v2, expected: [], new: [ids[1]]), .superseded)
    }

    func testTombstoneRefusesOlderWritesAndQueuesRemovals() throws {
        let v1 = try master.clock.next(), late = try master.clock.next(), v3 = try master.clock.next()
        XCTAssertEqual(try put("k", v1, holders: [a, b]), 200)
        XCTAssertEqual(try delete("k", v3), 200)
        XCTAssertEqual(try record("k")?.isTombstone, true)
        XCTAssertEqual(try put("k", late, holders: [a, b]), 409, "a write issued before the delete stays deleted")
        let key = try Key("k")
        XCTAssertEqual(try master.index.pendingRemoval(volume: master.registry.id(of: a)!, key: key), v3)
        XCTAssertEqual(try master.index.pendingRemoval(volume: master.registry.id(of: b)!, key: key), v3)
        _ = try master.purged(query([("key", "k"), ("ver", String(v3)), ("h", a)]))
        XCTAssertNil(try master.index.pendingRemoval(volume: master.registry.id(of: a)!, key: key))
        XCTAssertEqual(try record("k")?.holders, [master.registry.id(of: b)!])
        XCTAssertEqual(try put("k", try master.clock.next(), holders: [c]), 200, "a newer write brings the key back")
    }

    func testOverwriteQueuesRemovalOfTheOldCopies() throws {
        XCTAssertEqual(try put("k", try master.clock.next(), holders: [a, b]), 200)
        let v2 = try master.clock.next()
        XCTAssertEqual(try put("k", v2, holders: [b, c]), 200)
        let key = try Key("k")
        // Every old holder must drop the old copy, also the one that holds the new version.
        XCTAssertEqual(try master.index.pendingRemoval(volume: master.registry.id(of: a)!, key: key), v2)
        XCTAssertEqual(try master.index.pendingRemoval(volume: master.registry.id(of: b)!, key: key), v2)
        XCTAssertNil(try master.index.pendingRemoval(volume: master.registry.id(of: c)!, key: key))
    }

    func testResolveFencesOrphansSoLateCommitsFail() throws {
        // No record yet: the version is an orphan, and its commit can never land afterwards.
        let orphan = try master.clock.next()
        XCTAssertEqual(try resolve("k", orphan, a), "orphan\n")
        XCTAssertEqual(try put("k", orphan, holders: [a]), 409)
        // The current version is committed for its holders, an orphan for anyone else.
        let current = try master.clock.next()
        XCTAssertEqual(try put("k", current, holders: [a]), 200)
        XCTAssertEqual(try resolve("k", current, a), "committed\n")
        XCTAssertEqual(try resolve("k", current, b), "orphan\n")
        // A newer version that never committed: fenced above the current value.
        let stray = try master.clock.next()
        XCTAssertEqual(try resolve("k", stray, a), "orphan\n")
        XCTAssertEqual(try put("k", stray, holders: [a]), 409)
        XCTAssertEqual(try record("k")?.version, current, "the committed value is untouched")
        XCTAssertEqual(try put("k", try master.clock.next(), holders: [a]), 200)
    }

    func testExpiredTombstonesGoButAYoungerFenceStays() throws {
        XCTAssertEqual(try put("plain", try master.clock.next(), holders: [a]), 200)
        XCTAssertEqual(try delete("plain", try master.clock.next()), 200)
        XCTAssertEqual(try put("fenced", try master.clock.next(), holders: [a]), 200)
        XCTAssertEqual(try delete("fenced", try master.clock.next()), 200)
        usleep(600_000) // past the 0.5 s ticket lifetime of both tombstones
        let younger = try master.clock.next()
        XCTAssertEqual(try resolve("fenced", younger, a), "orphan\n")
        master.expireTombstones()
        XCTAssertNil(try record("plain"), "an expired tombstone is forgotten")
        let kept = try XCTUnwrap(try record("fenced"), "the fence must outlive the older tombstone")
        XCTAssertTrue(kept.isTombstone)
        XCTAssertEqual(kept.version, younger)
        XCTAssertEqual(try put("fenced", younger, holders: [a]), 409)
        usleep(600_000)
        master.expireTombstones()
        XCTAssertNil(try record("fenced"))
    }
}
