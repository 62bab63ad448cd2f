import Foundation
import KalavaraHTTP
import KalavaraSupport

/// The memory all listings in flight may hold together (`master --listing-memory`).
///
/// A listing's page stays in memory until its last byte is sent, and a client that reads
/// slowly (or not at all) keeps it there until the send timeout. Without a bound, forty such
/// readers of 10,000-entry pages took a master from 68 MiB to 7.2 GiB. Each listing takes
/// `Listing.reservedBytes(limit:)` before it reads the index and gives it back once its
/// answer is sent or abandoned (for an HTTP/1.0 client too, whose answer is built whole);
/// when none is left it waits briefly, then answers 503.
final class ListingBudget: @unchecked Sendable {
    /// Guards `available`.
    private let condition = NSCondition()
    private var available: Int

    init(bytes: Int) { available = bytes }

    /// Takes `bytes`, waiting up to `seconds` for other listings to give theirs back.
    func take(_ bytes: Int, waiting seconds: Double) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while available < bytes {
            guard condition.wait(until: deadline) else { return false }
        }
        available -= bytes
        return true
    }

    func give(_ bytes: Int) {
        condition.lock()
        available += bytes
        condition.broadcast()
        condition.unlock()
    }
}

extension Listing {
    /// A page ends early (with `next` set) once its entries reach this many bytes.
    static let pageBytes = 1 << 20
    /// What one listing takes from the budget at most: its page, one scan batch read past
    /// the page's end (`scanBatch` entries of at most a 1 KiB key and 4 KiB of attributes)
    /// and the buffer of its answer.
    static let reservedBytes = 2 << 20
    /// What one entry can cost a listing: as read from the index (the scan's rows and their
    /// decoded copy) and kept in the page, about 5 KiB each, and as JSON, up to six times
    /// its key and attributes.
    static let entryBytes = 3 * (Key.maxBytes + IndexRecord.maxAttributeBytes + 256)
        + 6 * (Key.maxBytes + IndexRecord.maxAttributeBytes) + 128
    /// What a listing of at most `limit` entries takes from the budget: a page cannot hold
    /// more than `limit` entries (nor read more per scan), so a small page reserves little
    /// and many `limit=1` listings do not exhaust the budget.
    static func reservedBytes(limit: Int) -> Int {
        min(reservedBytes, limit * entryBytes + 2 * (KeyPage.bufferBytes + 8 * 1024))
    }
    /// How long a listing waits for budget before it answers 503.
    static let budgetWait = 2.0
}

/// `GET /store/?prefix=` answers: a page of keys and where the next page starts, as
/// `{"details":[...],"keys":[...],"next":K,"prefixes":[...]}` (keys sorted, as the JSON
/// encoder wrote it before; `details` only with `detail=1`, `prefixes` only with a
/// delimiter, `next` null on the last page).
///
/// Written as it is produced, a buffer at a time, to the connection's blocking writer: a
/// slow reader holds the worker, not a copy of the whole answer in memory.
enum KeyPage {
    /// Flushed to the socket whenever this much is buffered.
    static let bufferBytes = 64 * 1024

    /// The answer, streamed chunked; for an HTTP/1.0 client, which knows no chunks, built
    /// whole (a page's `bytes` bound its JSON, so this is bounded too) and sent with its
    /// length. `finished` runs once the answer is sent or abandoned: until then its memory
    /// is held, by a slow reader too.
    static func answer(_ page: Listing, prefixes withPrefixes: Bool, details withDetails: Bool, chunked: Bool,
                       finished: @escaping () -> Void) -> HTTPResponse {
        var response: HTTPResponse
        if chunked {
            response = HTTPResponse(status: 200, body: .stream(BodyStream(count: nil, finished: finished) { write in
                try encode(page, prefixes: withPrefixes, details: withDetails, to: write)
            }))
            response.headers.set("Transfer-Encoding", "chunked")
        } else {
            var whole: [UInt8] = []
            whole.reserveCapacity(page.bytes + bufferBytes)
            try? encode(page, prefixes: withPrefixes, details: withDetails) { whole += $0 }
            response = HTTPResponse(status: 200, body: .stream(BodyStream(count: whole.count, finished: finished) { write in
                try whole.withUnsafeBytes { try write($0) }
            }))
        }
        response.headers.set("Content-Type", "application/json")
        return response
    }

    /// Writes the page's JSON to `write`, `bufferBytes` at a time.
    private static func encode(_ page: Listing, prefixes withPrefixes: Bool, details withDetails: Bool,
                               to write: (UnsafeRawBufferPointer) throws -> Void) throws {
        var out: [UInt8] = []
        out.reserveCapacity(bufferBytes + 8 * 1024)
        func flushIfFull() throws {
            guard out.count >= bufferBytes else { return }
            try out.withUnsafeBytes { try write($0) }
            out.removeAll(keepingCapacity: true)
        }
        func list<S: Sequence>(_ name: String, _ items: S, _ item: (S.Element, inout [UInt8]) -> Void) throws {
            out += Array("\"\(name)\":[".utf8)
            for (position, element) in items.enumerated() {
                if position > 0 { out.append(UInt8(ascii: ",")) }
                item(element, &out)
                try flushIfFull()
            }
            out.append(UInt8(ascii: "]"))
        }
        out.append(UInt8(ascii: "{"))
        if withDetails {
            try list("details", page.records) { record, out in
                out += Array("{".utf8)
                if let attributes = record.attributes {
                    out += Array("\"attributes\":".utf8)
                    JSONText.appendString(String(decoding: attributes, as: UTF8.self), to: &out)
                    out.append(UInt8(ascii: ","))
                }
                if let md5 = record.md5 { out += Array("\"md5\":\"\(Hex.encode(md5))\",".utf8) }
                out += Array("\"size\":\(record.size),\"version\":\(record.version)}".utf8)
            }
            out.append(UInt8(ascii: ","))
        }
        try list("keys", page.keys) { key, out in JSONText.appendString(key.description, to: &out) }
        out += Array(",\"next\":".utf8)
        if let next = page.next {
            JSONText.appendString(String(decoding: next, as: UTF8.self), to: &out)
        } else {
            out += Array("null".utf8)
        }
        if withPrefixes {
            out.append(UInt8(ascii: ","))
            try list("prefixes", page.prefixes) { prefix, out in
                JSONText.appendString(String(decoding: prefix, as: UTF8.self), to: &out)
            }
        }
        out += Array("}\n".utf8)
        try out.withUnsafeBytes { try write($0) }
    }
}

/// JSON text written by hand, for answers streamed without building a document first.
enum JSONText {
    /// The bytes `appendString` writes for `bytes` decoded as UTF-8 (as `Key.description`
    /// does: an undecodable byte becomes U+FFFD, three bytes).
    static func count(_ bytes: [UInt8]) -> Int {
        var total = 2
        for byte in String(decoding: bytes, as: UTF8.self).utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), 0x0A, 0x0D, 0x09, 0x08, 0x0C: total += 2
            case 0..<0x20: total += 6
            default: total += 1
            }
        }
        return total
    }

    /// `text` as a JSON string, escaped as `JSONEncoder` does with `.withoutEscapingSlashes`.
    static func appendString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x08: out += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
            case 0x0C: out += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
            case 0..<0x20: out += Array(String(format: "\\u%04x", byte).utf8)
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
