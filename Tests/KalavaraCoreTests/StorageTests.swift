import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import Synchronization
import XCTest

final class StorageTests: XCTestCase {
    var directory: String!

    override func setUp() {
        directory = NSTemporaryDirectory() + "kalavara-unit-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    private func read(_ value: StoredValue) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: value.size)
        _ = bytes.withUnsafeMutableBytes { pread(value.file.fd, $0.baseAddress, value.size, off_t(value.valueOffset)) }
        return bytes
    }

    func testFileStoreWritesVersionsSideBySide() throws {
        let store = try FileStore(root: directory + "/vol")
        let key = try Key("a/../b")
        for (version, text) in [(UInt64(5), "old"), (UInt64(9), "newer")] {
            let write = try store.beginWrite(key: key, version: version)
            try write.append(Array(text.utf8))
            try write.finish()
            XCTAssertEqual(write.valueBytes, text.utf8.count)
        }
        XCTAssertEqual(store.versions(of: key), [5, 9])
        XCTAssertEqual(read(try XCTUnwrap(try store.open(key, version: nil))), Array("newer".utf8))
        XCTAssertEqual(read(try XCTUnwrap(try store.open(key, version: 5))), Array("old".utf8))
        XCTAssertNil(try store.open(key, version: 7))
        XCTAssertNil(try store.open(try Key("other"), version: nil))
        XCTAssertEqual(try store.removeVersions(of: key) { $0 < 9 }, 1)
        XCTAssertEqual(store.versions(of: key), [9])
        // Files are named by hash: nothing of the key's text reaches the file system.
        let names = FileManager.default.enumerator(atPath: directory + "/vol/data")!.allObjects as! [String]
        XCTAssertFalse(names.contains { $0.contains("..") })
    }

    /// Writes a small value the way the volume does with the journal: logged, no fsync.
    private func loggedWrite(_ store: FileStore, _ journal: UncommittedJournal, _ key: Key, _ version: UInt64,
                             _ bytes: [UInt8]) throws {
        let write = try store.beginWrite(key: key, version: version)
        try write.append(bytes)
        let position = try XCTUnwrap(try journal.appendLogged(key, version: version, value: bytes, crc: write.checksum.value))
        try write.finish(durably: false) { try journal.waitUntilDurable(position) }
        journal.applied(position)
    }

    private func removeLogged(_ store: FileStore, _ journal: UncommittedJournal, _ key: Key, _ version: UInt64) throws {
        XCTAssertTrue(try journal.removing([.init(key: key, version: version)]) { _ in try store.remove(key, version: version, durably: false) })
    }

    /// A crash may lose a journaled value's unsynced file, or leave it cut: start-up puts
    /// it back whole from the journal, leaves an intact one alone, and a removal that did
    /// not reach the disk is made again.
    func testJournalPutsBackLostFilesAndRemovesAgain() throws {
        let root = directory + "/vol"
        var store = try FileStore(root: root)
        var journal = try UncommittedJournal(path: root + "/uncommitted.journal")
        try journal.startCheckpoints(syncing: root + "/data", every: 3600)
        let (lost, cut, intact, removed) = (try Key("lost"), try Key("cut"), try Key("intact"), try Key("removed"))
        let value = { (key: Key) in Array("value of \(key)".utf8) + [UInt8](repeating: 7, count: 1000) }
        for key in [lost, cut, intact, removed] { try loggedWrite(store, journal, key, 3, value(key)) }
        journal.strike(intact, version: 3) // committed: struck, yet still unsettled until a checkpoint
        let removedPath = store.path(stem: FileStore.fileStem(removed), version: 3)
        let removedBytes = try XCTUnwrap(FileManager.default.contents(atPath: removedPath))
        try removeLogged(store, journal, removed, 3)
        journal.close()
        // What a power cut can leave of files that were never synced.
        XCTAssertEqual(unlink(store.path(stem: FileStore.fileStem(lost), version: 3)), 0)
        XCTAssertEqual(truncate(store.path(stem: FileStore.fileStem(cut), version: 3), 40), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: removedPath, contents: removedBytes))

        store = try FileStore(root: root)
        journal = try UncommittedJournal(path: root + "/uncommitted.journal")
        XCTAssertEqual(journal.unsettledRecords.count, 4)
        XCTAssertEqual(try store.replay(journal.unsettledRecords), 3)
        for key in [lost, cut, intact] {
            let held = try XCTUnwrap(try store.open(key, version: 3))
            XCTAssertEqual(try store.readVerified(held), value(key))
        }
        XCTAssertNil(try store.open(removed, version: 3))
        XCTAssertTrue(journal.isPending(lost, version: 3))
        XCTAssertFalse(journal.isPending(intact, version: 3))
        // A replay is idempotent.
        XCTAssertEqual(try store.replay(journal.unsettledRecords), 0)
        journal.close()
    }

    /// A second upload of a version already in place is refused, yet journaled its bytes:
    /// start-up keeps the whole file that won, and a version written again the fsync way
    /// after a recorded removal is not removed by that record.
    func testReplayKeepsTheFileThatWonAndForgetsSupersededRemovals() throws {
        let root = directory + "/vol"
        var store = try FileStore(root: root)
        var journal = try UncommittedJournal(path: root + "/uncommitted.journal")
        try journal.startCheckpoints(syncing: root + "/data", every: 3600)
        let (won, back) = (try Key("won"), try Key("back"))
        try loggedWrite(store, journal, won, 4, Array("first".utf8))
        let loser = try store.beginWrite(key: won, version: 4)
        try loser.append(Array("other".utf8))
        let position = try XCTUnwrap(try journal.appendLogged(won, version: 4, value: Array("other".utf8), crc: loser.checksum.value))
        XCTAssertThrowsError(try loser.finish(durably: false) { try journal.waitUntilDurable(position) })
        journal.applied(position)
        loser.abort()
        try loggedWrite(store, journal, back, 2, Array("gone".utf8))
        try removeLogged(store, journal, back, 2)
        let again = try store.beginWrite(key: back, version: 2) // a repair copy, fsynced
        try again.append(Array("back again".utf8))
        let plain = try journal.append(back, version: 2)
        try again.finish { try journal.waitUntilDurable(plain) }
        journal.close()

        store = try FileStore(root: root)
        journal = try UncommittedJournal(path: root + "/uncommitted.journal")
        XCTAssertEqual(try store.replay(journal.unsettledRecords), 0)
        XCTAssertEqual(try store.readVerified(try XCTUnwrap(try store.open(won, version: 4))), Array("first".utf8))
        XCTAssertEqual(try store.readVerified(try XCTUnwrap(try store.open(back, version: 2))), Array("back again".utf8))
        journal.close()
    }

    /// A checkpoint syncs the filesystem and drops the values from the journal; what is
    /// pending stays pending, and a record cut short by a crash is ignored whole.
    func testCheckpointDropsSettledRecordsAndTornRecordsAreIgnored() throws {
        let root = directory + "/vol"
        let store = try FileStore(root: root)
        let path = root + "/uncommitted.journal"
        var journal = try UncommittedJournal(path: path)
        XCTAssertNil(try journal.appendLogged(try Key("early"), version: 1, value: [1], crc: CRC32.checksum([1])),
                     "before checkpoints run, no value is logged")
        try journal.startCheckpoints(syncing: root + "/data", every: 3600)
        let key = try Key("k")
        try loggedWrite(store, journal, key, 5, [UInt8](repeating: 1, count: 2048))
        XCTAssertEqual(journal.unsettledValueBytes, 2048)
        try journal.checkpoint()
        XCTAssertEqual(journal.unsettledValueBytes, 0)
        XCTAssertTrue(journal.isPending(key, version: 5))
        let size = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        XCTAssertLessThan(size, 200, "the value left the journal")
        journal.close()
        let torn = "+ 9 \(Hex.encode(Array("t".utf8))) 100 4 \(String(CRC32.checksum([1, 2, 3, 4]), radix: 16)) 010203"
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(torn.utf8))
        try handle.close()
        journal = try UncommittedJournal(path: path)
        XCTAssertTrue(journal.unsettledRecords.isEmpty)
        XCTAssertTrue(journal.isPending(key, version: 5))
        XCTAssertFalse(journal.isPending(try Key("t"), version: 9))
        journal.close()
    }

    /// A removed small file is recycled for the next write, but never while a reader has
    /// it open: that reader keeps reading its own value.
    func testRecycledFilesAreNeverOneAReaderHoldsOpen() throws {
        let store = try FileStore(root: directory + "/vol")
        let key = try Key("k")
        func write(_ version: UInt64, _ text: String) throws {
            let write = try store.beginWrite(key: key, version: version)
            try write.append(Array(text.utf8))
            try write.finish()
        }
        try write(1, "first")
        let held = try XCTUnwrap(try store.open(key, version: 1))
        XCTAssertEqual(store.openValueFiles, 1)
        XCTAssertTrue(try store.remove(key, version: 1))
        XCTAssertEqual(store.recycledFiles, 0, "an open file is unlinked, not recycled")
        try write(2, "second")
        XCTAssertEqual(read(held), Array("first".utf8))
        XCTAssertTrue(try store.remove(key, version: 2))
        XCTAssertEqual(store.recycledFiles, 1)
        try write(3, "third, longer than the first two")
        XCTAssertEqual(store.recycledFiles, 0, "the next write reuses it")
        XCTAssertEqual(read(try XCTUnwrap(try store.open(key, version: 3))), Array("third, longer than the first two".utf8))
        XCTAssertEqual(read(held), Array("first".utf8))
        XCTAssertNil(try store.open(key, version: 2))
    }

    func testAbortedWriteLeavesNothing() throws {
        let store = try FileStore(root: directory + "/vol")
        let key = try Key("k")
        let write = try store.beginWrite(key: key, version: 1)
        try write.append([1, 2, 3])
        write.abort()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory + "/vol/tmp"), [])
        XCTAssertNil(try store.open(key, version: nil))
    }

    /// A small value opened for a GET is read with its header in one read and checked from
    /// those bytes: a flipped bit, a cut or a grown file is refused as when it was read twice.
    func testASmallValueIsReadWithItsHeaderAndStillChecked() throws {
        let store = try FileStore(root: directory + "/vol")
        let key = try Key("one-read")
        let value = (0..<1024).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let write = try store.beginWrite(key: key, version: 4)
        try write.append(value)
        try write.finish()
        let opened = try XCTUnwrap(try store.open(key, version: 4, readingUpTo: 1024))
        XCTAssertEqual(opened.contents, value)
        XCTAssertEqual(try store.readVerified(opened), value)
        for readAhead in [0, 1023] {
            let unread = try XCTUnwrap(try store.open(key, version: 4, readingUpTo: readAhead))
            XCTAssertNil(unread.contents, "a value over the limit is read by readVerified")
            XCTAssertEqual(try store.readVerified(unread), value)
        }

        let path = store.path(stem: FileStore.fileStem(key), version: 4)
        let good = try XCTUnwrap(FileManager.default.contents(atPath: path))
        var flipped = good
        flipped[flipped.count - 100] ^= 0x01
        let damages: [(String, Data)] = [("flipped", flipped), ("cut", good.dropLast()), ("grown", good + [0])]
        for (damage, bytes) in damages {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let damaged = try XCTUnwrap(try store.open(key, version: 4, readingUpTo: 64 * 1024))
            XCTAssertNotNil(damaged.contents, damage)
            XCTAssertNil(try store.readVerified(damaged), "a \(damage) file fails its check")
        }
    }

    func testAFilesPathIsItsBucketStemAndVersion() throws {
        let store = try FileStore(root: directory + "/vol")
        let stem = FileStore.fileStem(try Key("k"))
        for version: UInt64 in [0, 7, 10, 117_740_314_419_331_072, .max] {
            let bucket: String = directory + "/vol/data/" + String(stem.prefix(3))
            XCTAssertEqual(store.path(stem: stem, version: version), bucket + "/" + stem + "." + String(version))
        }
    }

    func testLeftoverTemporaryFilesAreRemovedAtStart() throws {
        _ = try FileStore(root: directory + "/vol")
        _ = FileManager.default.createFile(atPath: directory + "/vol/tmp/partial", contents: Data([1]))
        _ = try FileStore(root: directory + "/vol")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory + "/vol/tmp"), [])
    }

    func testFileWithWrongHeaderIsNotServed() throws {
        let store = try FileStore(root: directory + "/vol")
        let key = try Key("k")
        let write = try store.beginWrite(key: key, version: 3)
        try write.finish()
        let path = store.path(stem: FileStore.fileStem(key), version: 3)
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try store.open(key, version: 3))
    }

    func testValueFileHeaderRoundTrip() throws {
        let header = ValueFileHeader(key: try Key([1, 2, 255]), version: 77)
        XCTAssertEqual(ValueFileHeader.decode(header.encoded() + [9, 9]), header)
        XCTAssertNil(ValueFileHeader.decode(Array(header.encoded().dropLast())))
        XCTAssertNil(ValueFileHeader.decode([UInt8](repeating: 0, count: 40)))
    }

    func testIndexPersistsRecordsVolumesAndCeiling() throws {
        let path = directory + "/db"
        var index: Index? = try Index(path: path)
        let key = try Key("k")
        try index!.setRecord(IndexRecord(version: 10, size: 3, holders: [1]), for: key)
        try index!.setVolumeURLs(["http://a:1", "http://b:2"])
        try index!.setVersionCeiling(99)
        index!.close()
        index = nil
        let reopened = try Index(path: path)
        XCTAssertEqual(try reopened.record(for: key), IndexRecord(version: 10, size: 3, holders: [1]))
        XCTAssertEqual(try reopened.volumeURLs(), ["http://a:1", "http://b:2"])
        XCTAssertEqual(try reopened.versionCeiling(), 99)
        XCTAssertThrowsError(try Index(path: path), "a second open of a locked index must fail")
        reopened.close()
    }

    func testIndexListingAndTombstoneQueue() throws {
        let index = try Index(path: directory + "/db")
        defer { index.close() }
        for name in ["a", "b/1", "b/2", "b/3", "c"] {
            try index.setRecord(IndexRecord(version: 1, size: 1, holders: [0]), for: try Key(name))
        }
        XCTAssertEqual(try index.list(prefix: Array("b/".utf8), after: nil, limit: 10).map(\.0.description), ["b/1", "b/2", "b/3"])
        XCTAssertEqual(try index.list(prefix: Array("b/".utf8), after: Array("b/1".utf8), limit: 1).map(\.0.description), ["b/2"])
        XCTAssertEqual(try index.list(prefix: [], after: Array("b/3".utf8), limit: 10).map(\.0.description), ["c"])

        var changes = Index.Changes()
        changes.setRecord(IndexRecord(version: 20, isTombstone: true, size: 0, holders: [0]), for: try Key("a"))
        changes.queueExpiry(of: try Key("a"), version: 20)
        changes.queueExpiry(of: try Key("c"), version: 30)
        changes.queueRemoval(volume: 3, key: try Key("a"), below: 20)
        changes.queueRemoval(volume: 3, key: try Key("c"), below: 30)
        changes.queueRemoval(volume: 4, key: try Key("c"), below: 31)
        try index.apply(changes)
        XCTAssertEqual(index.tombstones(issuedBefore: 25, limit: 10).map(\.key.description), ["a"])
        XCTAssertEqual(index.tombstones(issuedBefore: 31, limit: 10).map(\.version), [20, 30])
        XCTAssertEqual(index.pendingRemovals(volume: 3, limit: 10).map(\.below), [20, 30])
        XCTAssertEqual(index.pendingRemovals(volume: 4, limit: 10).map(\.key.description), ["c"])
        XCTAssertEqual(try index.pendingRemoval(volume: 4, key: try Key("c")), 31)

        changes = Index.Changes()
        changes.dropExpiry(of: try Key("a"), version: 20)
        changes.removeRecord(for: try Key("a"))
        changes.dropRemoval(volume: 3, key: try Key("a"))
        try index.apply(changes)
        XCTAssertNil(try index.record(for: try Key("a")))
        XCTAssertEqual(index.tombstones(issuedBefore: 100, limit: 10).map(\.version), [30])
        XCTAssertEqual(index.pendingRemovals(volume: 3, limit: 10).map(\.key.description), ["c"])
    }

    /// A reopen (which replays RocksDB's log: seconds) is tried by one thread at a time and
    /// at most once per `reopenInterval`: other writers are refused at once, not queued.
    func testHeldOffWritesAreRefusedAndReopensAreTriedAtMostOnceEveryTwoSeconds() throws {
        let db = try RocksDB(path: directory + "/db")
        defer { db.close() }
        try db.put(Array("a".utf8), [1], sync: true)
        db.holdOffWrites("the disk fell below its reserve")
        XCTAssertTrue(db.writesHeldOff)
        XCTAssertThrowsError(try db.put(Array("b".utf8), [2], sync: true)) {
            XCTAssertTrue("\($0)".contains("below its reserve"), "\($0)")
        }
        XCTAssertEqual(try db.get(Array("a".utf8)), [1], "reads go on")
        try db.reopen()
        XCTAssertFalse(db.writesHeldOff)
        try db.put(Array("b".utf8), [2], sync: true)

        db.holdOffWrites("again")
        XCTAssertThrowsError(try db.reopen(), "a second reopen within 2 s is refused at once")
        XCTAssertTrue(db.writesHeldOff)
        XCTAssertEqual(try db.get(Array("b".utf8)), [2])
    }

    /// While a reopen holds the index (an open replays the log), an event loop's lookup
    /// does not wait: it is handed to a worker (`EventLoop.MustHandOff`), so no connection
    /// freezes behind it.
    func testAnEventLoopsLookupDuringAReopenIsHandedOffInsteadOfWaiting() throws {
        let db = try RocksDB(path: directory + "/db")
        defer { db.close() }
        let value = [UInt8](repeating: 7, count: 256 << 10)
        for index in 0..<40 { try db.put(Array("big\(index)".utf8), value, sync: false) }
        try db.put(Array("a".utf8), [1], sync: true)
        db.holdOffWrites("a test")
        let reopened = Atomic(false), started = Atomic(false), handedOff = Atomic(0), answered = Atomic(0)
        let done = DispatchSemaphore(value: 0)
        let loop = Thread {
            Thread.current.threadDictionary["kalavara.event-loop"] = true
            started.store(true, ordering: .releasing)
            while !reopened.load(ordering: .acquiring) {
                do {
                    if try db.get(Array("a".utf8)) == [1] { answered.wrappingAdd(1, ordering: .relaxed) }
                } catch is EventLoop.MustHandOff {
                    handedOff.wrappingAdd(1, ordering: .relaxed)
                } catch {}
            }
            done.signal()
        }
        loop.start()
        while !started.load(ordering: .acquiring) { usleep(1000) }
        usleep(10_000)
        let start = ContinuousClock.now
        try db.reopen()
        let took = ContinuousClock.now - start
        reopened.store(true, ordering: .releasing)
        done.wait()
        print("reopen took \(took); lookups answered \(answered.load(ordering: .relaxed)), handed off \(handedOff.load(ordering: .relaxed))")
        XCTAssertGreaterThan(handedOff.load(ordering: .relaxed), 0, "a lookup on the loop during the reopen is handed off")
        XCTAssertGreaterThan(answered.load(ordering: .relaxed), 0)
        XCTAssertEqual(try db.get(Array("a".utf8)), [1])
    }
}
