import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import Synchronization
import XCTest

private typealias Entry = UncommittedJournal.Entry

/// The journal's compaction writes its new file outside the writers' lock: nothing a
/// writer records meanwhile is lost, and no writer waits for it.
extension StorageTests {
    /// Every entry still pending.
    private func pending(_ journal: UncommittedJournal) -> Set<Entry> {
        Set(journal.entries(olderThan: .infinity, limit: .max))
    }

    private func settlements(_ journal: UncommittedJournal) -> [Entry: UncommittedJournal.Settlement] {
        Dictionary(uniqueKeysWithValues: journal.unsettledRecords.map { ($0.entry, $0.settlement) })
    }

    /// Writer `writer`'s `index`th version, and its value.
    private static func entry(_ writer: Int, _ index: Int) -> Entry {
        Entry(key: try! Key("w\(writer)/k\(index)"), version: UInt64(index + 1))
    }

    private static func value(_ entry: Entry) -> [UInt8] { Array("value \(entry.version) of \(entry.key)".utf8) }

    /// Runs `body(0..<count)` on threads of their own, and waits for all of them.
    private func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let done = DispatchGroup()
        for index in 0..<count {
            done.enter()
            Thread {
                body(index)
                done.leave()
            }.start()
        }
        done.wait()
    }

    /// Writers append (plain and logged), strike and remove from several threads while
    /// compactions run back to back; after a reopen, exactly the live records are there.
    func testConcurrentAppendsAndStrikesSurviveCompactions() throws {
        let path = directory + "/uncommitted.journal"
        var journal = try UncommittedJournal(path: path)
        try journal.startCheckpoints(syncing: directory, every: 3600) // logged values allowed, no checkpoint
        let writers = 4, perWriter = 250
        let writing = Atomic<Int>(writers), compactions = Atomic<Int>(0)
        let failures = Mutex<[String]>([])
        let shared = journal
        onThreads(writers + 1) { thread in
            guard thread < writers else {
                while writing.load(ordering: .acquiring) > 0 {
                    do {
                        try shared.log.compact()
                        compactions.add(1, ordering: .relaxed)
                    } catch {
                        failures.withLock { $0.append("compaction: \(error)") }
                    }
                }
                return
            }
            defer { writing.subtract(1, ordering: .releasing) }
            do {
                for index in 0..<perWriter {
                    let entry = Self.entry(thread, index), bytes = Self.value(entry)
                    switch index % 5 {
                    case 0, 1: // a plain addition, committed (struck) or still in doubt
                        try shared.waitUntilDurable(try shared.append(entry.key, version: entry.version))
                        if index % 5 == 1 { shared.strike(entry.key, version: entry.version) }
                    default: // a logged value: in doubt, committed, or committed and removed
                        guard let position = try shared.appendLogged(entry.key, version: entry.version, value: bytes,
                                                                     crc: CRC32.checksum(bytes)) else {
                            throw StorageError.io("a logged value declined", 0)
                        }
                        try shared.waitUntilDurable(position)
                        shared.applied(position)
                        if index % 5 >= 3 { shared.strike(entry.key, version: entry.version) }
                        if index % 5 == 4 { try shared.removing([entry]) { _ in } }
                    }
                }
            } catch {
                failures.withLock { $0.append("writer \(thread): \(error)") }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertGreaterThan(compactions.load(ordering: .relaxed), 0)

        var live = Set<Entry>(), unsettled: [Entry: UncommittedJournal.Settlement] = [:]
        for writer in 0..<writers {
            for index in 0..<perWriter {
                let entry = Self.entry(writer, index), bytes = Self.value(entry)
                if [0, 2].contains(index % 5) { live.insert(entry) }
                if index % 5 >= 2 { unsettled[entry] = index % 5 == 4 ? .removed : .value(bytes, crc: CRC32.checksum(bytes)) }
            }
        }
        XCTAssertEqual(pending(journal), live)
        XCTAssertEqual(settlements(journal), unsettled)
        journal.close()
        journal = try UncommittedJournal(path: path)
        XCTAssertEqual(pending(journal), live, "exactly the live entries are read back")
        XCTAssertEqual(settlements(journal), unsettled, "and exactly the unsettled records")
        journal.close()
    }

    /// While a compaction is paused after writing its new file (outside the lock), a writer
    /// appends, waits for that to be durable and strikes; the swap then keeps all of it.
    func testAWriterIsNotBlockedWhileACompactionWritesItsFile() throws {
        let path = directory + "/uncommitted.journal"
        var journal = try UncommittedJournal(path: path)
        let (kept, struck, during) = (try Key("kept"), try Key("struck"), try Key("during"))
        try journal.waitUntilDurable(try journal.append(kept, version: 1))
        try journal.waitUntilDurable(try journal.append(struck, version: 2))

        let paused = DispatchSemaphore(value: 0), resume = DispatchSemaphore(value: 0), compacted = DispatchSemaphore(value: 0)
        let failure = Mutex<String?>(nil)
        let shared = journal
        Thread {
            do {
                try shared.log.compact(afterWrite: {
                    paused.signal()
                    resume.wait()
                })
            } catch {
                failure.withLock { $0 = "\(error)" }
            }
            compacted.signal()
        }.start()
        XCTAssertEqual(paused.wait(timeout: .now() + 60), .success, "the compaction reaches its hook")

        // The writer runs on a thread of its own: if it waited for the compaction, the test
        // says so instead of hanging (the generous timeout only guards against a hang).
        let wrote = DispatchSemaphore(value: 0)
        Thread {
            do {
                try shared.waitUntilDurable(try shared.append(during, version: 3))
                shared.strike(struck, version: 2)
            } catch {
                failure.withLock { $0 = "\(error)" }
            }
            wrote.signal()
        }.start()
        let writerFinished = wrote.wait(timeout: .now() + 60) == .success
        XCTAssertTrue(writerFinished, "an append and a strike complete while the compaction is paused")
        XCTAssertTrue(journal.isDurable)
        resume.signal()
        if !writerFinished { wrote.wait() }
        compacted.wait()
        XCTAssertNil(failure.withLock { $0 })

        let expected: Set = [Entry(key: kept, version: 1), Entry(key: during, version: 3)]
        XCTAssertEqual(pending(journal), expected)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertTrue(text.contains("+ 3 \(Hex.encode(during.bytes)) "), "the append made during the write is in the new file")
        XCTAssertTrue(text.contains("- 2 \(Hex.encode(struck.bytes))"), "and so is the strike")
        journal.close()
        journal = try UncommittedJournal(path: path)
        XCTAssertEqual(pending(journal), expected)
        journal.close()
    }
}
