import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

/// The pure parts of healing: value checksums and the old file format, the reconciler's
/// plans, the removal queue's marks, the inventory format, the rate limit.
final class HealingLogicTests: XCTestCase {
    var directory: String!

    override func setUp() {
        directory = NSTemporaryDirectory() + "kalavara-healing-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    // MARK: Checksums

    func testHeaderFormatsRoundTrip() throws {
        let key = try Key([1, 2, 255])
        let current = ValueFileHeader(key: key, version: 77, checksum: 0xdead_beef, size: 12)
        XCTAssertEqual(ValueFileHeader.decode(current.encoded() + [9, 9]), current)
        XCTAssertEqual(current.encodedCount, 32 + 3)
        let old = ValueFileHeader(key: key, version: 5, format: 1)
        XCTAssertEqual(old.encodedCount, 24 + 3)
        let decodedOld = ValueFileHeader.decode(old.encoded())
        XCTAssertEqual(decodedOld?.format, 1)
        XCTAssertNil(decodedOld?.checksum)
        XCTAssertNil(ValueFileHeader.decode(Array(current.encoded().dropLast())))
    }

    func testAHeaderWithAnImpossibleSizeIsDamagedNotATrap() throws {
        var bytes = ValueFileHeader(key: try Key("k"), version: 1, checksum: 1, size: 1).encoded()
        bytes[ValueFileHeader.checksumOffset + 4 + 7] = 0x80 // size ≥ 2^63
        XCTAssertNil(ValueFileHeader.decode(bytes))
    }

    func testFenceTombstonesRoundTripAndAreTold() throws {
        let fence = IndexRecord(version: 9, isTombstone: true, size: 0, holders: [], isFence: true)
        XCTAssertEqual(IndexRecord(decoding: fence.encoded()), fence)
        let tombstone = IndexRecord(version: 9, isTombstone: true, size: 0, holders: [2], floor: 4)
        XCTAssertEqual(IndexRecord(decoding: tombstone.encoded()), tombstone)
        XCTAssertFalse(IndexRecord(decoding: tombstone.encoded())!.isFence)
    }

    func testChecksumIsComputedWhileWritingAndCatchesAFlippedBit() throws {
        let store = try FileStore(root: directory + "/vol")
        let key = try Key("checked")
        let value = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let write = try store.beginWrite(key: key, version: 9)
        for piece in stride(from: 0, to: value.count, by: 7_000) {
            try write.append(Array(value[piece..<min(piece + 7_000, value.count)]))
        }
        try write.finish()
        let stored = try XCTUnwrap(try store.open(key, version: 9))
        XCTAssertEqual(stored.checksum, CRC32.checksum(value))
        XCTAssertEqual(stored.declaredSize, value.count)
        XCTAssertEqual(try store.verify(stored), .good)
        XCTAssertEqual(try store.readVerified(stored), value)

        // One bit flipped on disk.
        let path = store.path(stem: FileStore.fileStem(key), version: 9)
        var bytes = try XCTUnwrap(FileManager.default.contents(atPath: path))
        bytes[bytes.count - 1000] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: path))
        let reopened = try XCTUnwrap(try store.open(key, version: 9))
        XCTAssertEqual(try store.verify(reopened), .corrupt)
        XCTAssertNil(try store.readVerified(reopened))
        // Only the file that was checked goes: a good copy renamed into its place stays.
        let other = try XCTUnwrap(try store.open(key, version: 9))
        unlink(path) // a version is written once: the good copy comes after the bad one went
        let replacement = try store.beginWrite(key: key, version: 9)
        try replacement.append(value)
        try replacement.finish()
        XCTAssertFalse(try store.quarantine(key, version: 9, checked: other))
        XCTAssertEqual(try store.verify(try XCTUnwrap(try store.open(key, version: 9))), .good)
        var again = try XCTUnwrap(FileManager.default.contents(atPath: path))
        again[again.count - 1000] ^= 0x10
        try again.write(to: URL(fileURLWithPath: path))
        XCTAssertTrue(try store.quarantine(key, version: 9))
        XCTAssertNil(try store.open(key, version: 9))
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/vol/quarantine/" + (path as NSString).lastPathComponent))
    }

    func testACopyThatDoesNotMatchItsChecksumIsNotKept() throws {
        let store = try FileStore(root: directory + "/vol")
        let key = try Key("copy")
        let write = try store.beginWrite(key: key, version: 4)
        try write.append(Array("hello".utf8))
        XCTAssertThrowsError(try write.finish(expecting: CRC32.checksum(Array("hellO".utf8))))
        write.abort()
        XCTAssertEqual(store.versions(of: key), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory + "/vol/tmp"), [])
    }

    func testFilesOfTheOldFormatAreServedAndCountedUnverified() throws {
        let store = try FileStore(root: directory + "/vol")
        let key = try Key("legacy")
        let stem = FileStore.fileStem(key)
        let bucket = store.bucket(forStem: stem)
        try FileManager.default.createDirectory(atPath: bucket, withIntermediateDirectories: true)
        let bytes = ValueFileHeader(key: key, version: 3, format: 1).encoded() + Array("old value".utf8)
        try Data(bytes).write(to: URL(fileURLWithPath: store.path(stem: stem, version: 3)))
        let stored = try XCTUnwrap(try store.open(key, version: 3))
        XCTAssertNil(stored.checksum)
        XCTAssertEqual(try store.readVerified(stored), Array("old value".utf8))
        XCTAssertEqual(try store.verify(stored), .unverified)
        XCTAssertEqual(store.fileNames(after: nil, limit: 10), [stem + ".3"])
        XCTAssertEqual(try store.open(fileNamed: stem + ".3")?.key, key)
    }

    func testFileNamesPageThroughEveryBucketInOrder() throws {
        let store = try FileStore(root: directory + "/vol")
        for index in 0..<40 {
            let write = try store.beginWrite(key: try Key("k\(index)"), version: UInt64(index + 1))
            try write.finish()
        }
        var seen: [String] = []
        var cursor: String?
        while true {
            let page = store.fileNames(after: cursor, limit: 7)
            seen += page
            guard page.count == 7 else { break }
            cursor = page.last
        }
        XCTAssertEqual(seen.count, 40)
        XCTAssertEqual(seen, seen.sorted())
        XCTAssertEqual(Set(seen).count, 40)
    }

    func testInventoryPagesRoundTrip() throws {
        let entries = [Inventory.Entry(key: try Key("a b/ü"), version: 7, size: 3, checksum: 0xabc),
                       Inventory.Entry(key: try Key("old"), version: 9, size: 0, checksum: nil)]
        let page = try Inventory.Page(parsing: Array(Inventory.Page(entries: entries, next: "abc.9").text.utf8))
        XCTAssertEqual(page.entries, entries)
        XCTAssertEqual(page.next, "abc.9")
        XCTAssertNil(try Inventory.Page(parsing: Array(Inventory.Page(entries: [], next: nil).text.utf8)).next)
        XCTAssertThrowsError(try Inventory.Page(parsing: Array("garbage".utf8)))
    }

    // MARK: Plans

    private func view(_ states: [VolumeRegistry.State], replicas: Int) throws -> (PlacementView, Index) {
        let index = try Index(path: directory + "/db-\(UUID().uuidString)")
        let urls = (0..<states.count).map { "http://127.0.0.1:\(7000 + $0)" }
        let registry = try VolumeRegistry(index: index, seeds: urls, outAfter: 10)
        for (id, state) in states.enumerated() {
            switch state {
            case .down, .out:
                for _ in 0..<VolumeRegistry.failuresBeforeDown { _ = registry.recordCheck(id: UInt16(id), succeeded: false) }
            case .draining: try registry.setMode(UInt16(id), .draining)
            case .removed: try registry.setMode(UInt16(id), .removed)
            case .up: break
            }
        }
        // `out` is down for longer than outAfter: look from the future.
        let now = monotonicSeconds() + (states.contains(.out) ? 100 : 0)
        var view = PlacementView(registry: registry, replicas: replicas, now: now)
        if states.contains(.out) && states.contains(.down) { XCTFail("the test cannot mix down and out") }
        _ = view
        view = PlacementView(registry: registry, replicas: replicas, now: now)
        return (view, index)
    }

    func testAKeyOnItsPlacementIsInPlaceAndNeedsNothing() throws {
        let (view, index) = try view([.up, .up, .up], replicas: 2)
        defer { index.close() }
        let key = try Key("x")
        let placement = Array(view.order(key).prefix(2))
        let record = IndexRecord(version: 5, size: 1, holders: placement)
        XCTAssertEqual(view.assess(key, record), .inPlace)
        XCTAssertEqual(view.plan(key, record), PlacementView.Plan(targets: [], keep: placement, drop: []))
    }

    func testAnOutHolderIsReplacedThenDropped() throws {
        let (view, index) = try view([.up, .up, .up, .out], replicas: 2)
        defer { index.close() }
        // A key that had the out volume (3) in its placement.
        let key = try (0..<200).lazy.map { try Key("k\($0)") }.first { key in
            PlacementView.allOrder(key, count: 4).prefix(2).contains(3)
        }!
        let keptHolder = PlacementView.allOrder(key, count: 4).prefix(2).first { $0 != 3 }!
        let record = IndexRecord(version: 5, size: 1, holders: [keptHolder, 3])
        XCTAssertEqual(view.assess(key, record), .short)
        let plan = view.plan(key, record)
        XCTAssertEqual(plan.targets.count, 1)
        XCTAssertFalse(plan.targets.contains(3))
        XCTAssertEqual(plan.drop, [3])
        XCTAssertEqual(Set(plan.keep), Set([keptHolder] + plan.targets))
        // If the copy fails, nothing is dropped: the out copy still beats none.
        let failed = view.plan(key, record, copiable: { _ in false })
        XCTAssertEqual(failed.targets, [])
        XCTAssertEqual(Set(failed.keep), Set([keptHolder, 3]))
        XCTAssertEqual(failed.drop, [])
    }

    func testADownPlacementVolumeGetsASubstituteOnlyWhenShort() throws {
        let (view, index) = try view([.up, .up, .up, .down], replicas: 2)
        defer { index.close() }
        let key = try (0..<200).lazy.map { try Key("k\($0)") }.first { key in
            view.order(key).prefix(2).contains(3)
        }!
        let order = view.order(key)
        let other = order.prefix(2).first { $0 != 3 }!
        let substitute = order.dropFirst(2).first!
        // Written while 3 was down: on the substitute. Nothing to do until 3 is back.
        let written = IndexRecord(version: 5, size: 1, holders: [other, substitute])
        XCTAssertEqual(view.assess(key, written), .misplaced)
        XCTAssertEqual(view.plan(key, written), PlacementView.Plan(targets: [], keep: [other, substitute], drop: []))
        // Short a copy while 3 is down: the substitute gets it.
        let short = IndexRecord(version: 5, size: 1, holders: [other])
        XCTAssertEqual(view.plan(key, short).targets, [substitute])
    }

    func testAVolumeBackFromDownTakesItsKeysBack() throws {
        let (view, index) = try view([.up, .up, .up, .up], replicas: 2)
        defer { index.close() }
        let key = try Key("k1")
        let order = view.order(key)
        let written = IndexRecord(version: 5, size: 1, holders: [order[0], order[2]])
        XCTAssertEqual(view.assess(key, written), .misplaced)
        XCTAssertEqual(view.plan(key, written), PlacementView.Plan(targets: [order[1]], keep: [order[0], order[1]], drop: [order[2]]))
    }

    func testADrainingHolderIsCopiedAwayAndDropped() throws {
        let (view, index) = try view([.up, .up, .draining], replicas: 2)
        defer { index.close() }
        let key = try Key("d")
        let record = IndexRecord(version: 5, size: 1, holders: [2, 0])
        XCTAssertEqual(view.assess(key, record), .short)
        XCTAssertEqual(view.plan(key, record), PlacementView.Plan(targets: [1], keep: view.order(key), drop: [2]))
    }

    // MARK: Removal queue

    func testTheRemovalQueueKeepsTheHigherMark() throws {
        let index = try Index(path: directory + "/db")
        defer { index.close() }
        let key = try Key("k")
        var changes = Index.Changes()
        try index.queueRemoval(&changes, volume: 1, key: key, below: 50)
        try index.apply(changes)
        changes = Index.Changes()
        try index.queueRemoval(&changes, volume: 1, key: key, below: 20)
        try index.apply(changes)
        XCTAssertEqual(try index.pendingRemoval(volume: 1, key: key), 50)
    }

    func testRateLimiterPacesBytes() {
        let limiter = RateLimiter(bytesPerSecond: 1_000_000)
        let start = monotonicSeconds()
        for _ in 0..<4 { limiter.take(100_000) }
        limiter.take(100_000)
        let elapsed = monotonicSeconds() - start
        // 500 kB at 1 MB/s, half a second of initial budget allowed: at least 0 s, at most ~0.6 s.
        XCTAssertLessThan(elapsed, 1.5)
        let burst = monotonicSeconds()
        for _ in 0..<10 { limiter.take(100_000) }
        XCTAssertGreaterThan(monotonicSeconds() - burst, 0.5, "a megabyte at 1 MB/s cannot take much less than a second")
    }
}

extension PlacementView {
    /// The order of a key over volumes 0..<count all up (URLs as in the tests above).
    static func allOrder(_ key: Key, count: Int) -> [UInt16] {
        let urls = (0..<count).map { "http://127.0.0.1:\(7000 + $0)" }
        return Placement.order(urls, for: key).map { UInt16(urls.firstIndex(of: $0)!) }
    }
}
