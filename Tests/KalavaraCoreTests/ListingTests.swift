@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

/// Listing with a delimiter: S3's common prefixes, without walking the keys they roll up.
final class ListingTests: XCTestCase {
    private let names = ["a", "b/1", "b/2", "b/3/x", "c/1", "c/2", "d", "e/deep/1", "e/deep/2", "e/z", "f"]
    private var rowsRead = 0

    private func scan(_ keys: [String], tombstones: Set<String> = [], prefix: String)
        -> ([UInt8]?, Int, (([UInt8]) -> Bool)?) -> [(Key, IndexRecord)] {
        let sorted = keys.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) }
        return { [self] after, limit, stopAfter in
            var page: [[UInt8]] = []
            for name in sorted where name.starts(with: Array(prefix.utf8)) && (after.map { $0.lexicographicallyPrecedes(name) } ?? true) {
                guard page.count < limit else { break }
                page.append(name)
                if stopAfter?(name) == true { break }
            }
            rowsRead += page.count
            return page.map { bytes in
                let name = String(decoding: bytes, as: UTF8.self)
                return (try! Key(bytes), IndexRecord(version: 1, isTombstone: tombstones.contains(name), size: 1, holders: [0]))
            }
        }
    }

    private func list(prefix: String = "", delimiter: String? = "/", after: String? = nil, limit: Int = 1000,
                      tombstones: Set<String> = []) -> (keys: [String], prefixes: [String], next: String?) {
        let page = Listing.page(prefix: Array(prefix.utf8), delimiter: delimiter.map { Array($0.utf8) }, after: after.map { Array($0.utf8) },
                                limit: limit, scan: scan(names, tombstones: tombstones, prefix: prefix))
        return (page.keys.map(\.description), page.prefixes.map { String(decoding: $0, as: UTF8.self) },
                page.next.map { String(decoding: $0, as: UTF8.self) })
    }

    func testCommonPrefixesRollUpAndAreNotWalked() {
        let page = list()
        XCTAssertEqual(page.keys, ["a", "d", "f"])
        XCTAssertEqual(page.prefixes, ["b/", "c/", "e/"])
        XCTAssertNil(page.next)
        XCTAssertLessThanOrEqual(rowsRead, 3 + 3 + 3, "each prefix costs one row and a seek, not its keys")
        XCTAssertEqual(list(prefix: "e/").prefixes, ["e/deep/"])
        XCTAssertEqual(list(prefix: "e/").keys, ["e/z"])
        XCTAssertEqual(list(prefix: "b/").keys, ["b/1", "b/2"])
        XCTAssertEqual(list(prefix: "b/").prefixes, ["b/3/"])
        XCTAssertEqual(list(delimiter: nil).keys, names, "without a delimiter: every key, as before")
        XCTAssertEqual(list(delimiter: "").keys, names)
    }

    func testPagesCountPrefixesAndResumeAfterThem() {
        var seen: [String] = []
        var after: String?
        repeat {
            let page = list(after: after, limit: 2)
            XCTAssertLessThanOrEqual(page.keys.count + page.prefixes.count, 2)
            seen += page.keys + page.prefixes
            after = page.next
        } while after != nil
        XCTAssertEqual(seen.sorted(), ["a", "b/", "c/", "d", "e/", "f"], "each item once across pages")
        // A page that ended on a prefix resumes past everything under it.
        XCTAssertEqual(list(after: "b/", limit: 1).prefixes, ["c/"])
    }

    func testTombstonesAreSkipped() {
        let page = list(tombstones: ["a", "c/1", "c/2"])
        XCTAssertEqual(page.keys, ["d", "f"])
        XCTAssertEqual(page.prefixes, ["b/", "e/"], "a prefix whose keys are all deleted is not listed")
    }

    func testMultiByteDelimiter() {
        XCTAssertEqual(Listing.rollUp(Array("x--y--z".utf8), prefix: [], delimiter: Array("--".utf8)).map { String(decoding: $0, as: UTF8.self) }, "x--")
        XCTAssertNil(Listing.rollUp(Array("xy".utf8), prefix: Array("x".utf8), delimiter: Array("/".utf8)))
    }

    func testAPageEndsAtItsByteBudgetAndPagesListEveryKeyOnce() {
        let keys = (0..<500).map { String(format: "k%04d", $0) + String(repeating: "x", count: 200) }
        var seen: [String] = []
        var after: [UInt8]?
        var pages = 0
        repeat {
            let page = Listing.page(prefix: [], delimiter: nil, after: after, limit: 10_000, maxBytes: 10_000,
                                    scan: scan(keys, prefix: ""))
            XCTAssertLessThan(page.bytes, 10_000 + 400, "a page ends at the first entry past its budget")
            seen += page.keys.map(\.description)
            after = page.next
            pages += 1
        } while after != nil && pages < 1000
        XCTAssertEqual(seen, keys)
        XCTAssertGreaterThan(pages, 5)
    }

    /// Control characters are six bytes each in JSON (`\u0001`): a page's byte budget counts
    /// them so, and an HTTP/1.0 answer, built whole, stays within it.
    func testAPageOfControlCharactersIsBoundedByItsJSONSize() throws {
        let attributes = [UInt8](repeating: 1, count: IndexRecord.maxAttributeBytes)
        let keys = (0..<200).map { try! Key(Array(String(format: "k%04d", $0).utf8) + [UInt8](repeating: 2, count: 500)) }
        let page = Listing.page(prefix: [], delimiter: nil, after: nil, limit: 10_000, maxBytes: 100_000) { after, limit, _ in
            keys.filter { key in after.map { $0.lexicographicallyPrecedes(key.bytes) } ?? true }.prefix(limit).map {
                ($0, IndexRecord(version: 1, size: 1, holders: [0], attributes: attributes))
            }
        }
        XCTAssertNotNil(page.next)
        var budgetGiven = false
        let answer = KeyPage.answer(page, prefixes: false, details: true, chunked: false) { budgetGiven = true }
        guard case .stream(let stream) = answer.body else { return XCTFail("an HTTP/1.0 answer has a known length") }
        var json: [UInt8] = []
        try stream.produce { json += $0 }
        XCTAssertEqual(json.count, stream.count)
        XCTAssertFalse(budgetGiven, "the budget is held until the answer is sent")
        let next = JSONText.count(try XCTUnwrap(page.next))
        XCTAssertLessThanOrEqual(json.count, page.bytes + next + 64, "a page's bytes (and `next`) bound its JSON")
        XCTAssertLessThan(page.bytes, 100_000 + 30_000)
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(json)))
        XCTAssertLessThan(Listing.reservedBytes(limit: 1), 256 << 10)
        XCTAssertEqual(Listing.reservedBytes(limit: 1000), Listing.reservedBytes)
    }
}
