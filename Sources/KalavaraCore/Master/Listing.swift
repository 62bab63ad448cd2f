/// A page of `GET /store/?prefix=P&delimiter=D&limit=N&after=K`: keys in byte order, and
/// with a delimiter the keys under P up to the next D rolled up into common prefixes, as S3
/// lists. Pure: `scan(after, limit)` reads the index (keys with prefix P after a cursor).
///
/// A rolled-up prefix is never walked: after one is found, the scan seeks past every key
/// that starts with it. A page may end on a prefix; `next` is then that prefix, and a page
/// asked for after it starts past everything it rolled up.
///
/// A page is bounded by bytes as well as by entries: 10,000 keys of 1 KiB names with 4 KiB
/// of attributes each are 50 MiB, which a read-only client could ask for many times at once.
/// It ends early, with `next` set, once what it holds reaches `maxBytes`, and the index is
/// read `scanBatch` entries at a time, so a page never holds much more than its budget.
struct Listing: Equatable {
    var keys: [Key] = []
    /// The index record of each key in `keys`, in the same order.
    var records: [IndexRecord] = []
    var prefixes: [[UInt8]] = []
    /// Where the next page starts (the last key or prefix returned), nil at the end.
    var next: [UInt8]?
    /// What the page holds, as counted against `maxBytes` (see `cost`).
    var bytes = 0

    /// Entries read from the index per scan: at most some 5 KiB each (a key and attributes).
    static let scanBatch = 128

    /// What an entry costs a page: its key and its attributes as JSON strings (a control
    /// character is six bytes there, `\u00XX`, an undecodable byte three), and a fixed share
    /// for the rest of its record and its JSON. So a page's `bytes` bound its JSON too.
    static func cost(_ key: Key, _ record: IndexRecord) -> Int {
        JSONText.count(key.bytes) + (record.attributes.map { JSONText.count($0) } ?? 0) + 128
    }

    /// Past every key that starts with `prefix`: keys are at most 1,024 bytes.
    static func pastEverything(under prefix: [UInt8]) -> [UInt8] {
        prefix + [UInt8](repeating: 0xFF, count: Key.maxBytes + 1)
    }

    /// `scan(after, limit, stopAfter)` must end at the first key `stopAfter` accepts.
    static func page(prefix: [UInt8], delimiter: [UInt8]?, after: [UInt8]?, limit: Int, maxBytes: Int = .max,
                     scan: (_ after: [UInt8]?, _ limit: Int, _ stopAfter: (([UInt8]) -> Bool)?) throws -> [(Key, IndexRecord)])
        rethrows -> Listing {
        var listing = Listing()
        var cursor = after
        let delimiter = delimiter.flatMap { $0.isEmpty ? nil : $0 }
        // A cursor that is itself a rolled-up prefix (the last page ended on it) starts past it.
        if let delimiter, let after, let rolled = rollUp(after, prefix: prefix, delimiter: delimiter), rolled == after {
            cursor = pastEverything(under: after)
        }
        var count: Int { listing.keys.count + listing.prefixes.count }
        var isFull: Bool { count == limit || listing.bytes >= maxBytes }
        while !isFull {
            let wanted = min(limit - count, scanBatch)
            // With a delimiter the scan stops at the first key that rolls up, so the keys
            // under a common prefix are never read.
            let batch = try scan(cursor, wanted, delimiter.map { delimiter in { rollUp($0, prefix: prefix, delimiter: delimiter) != nil } })
            var seeked = false
            for (key, record) in batch {
                cursor = key.bytes
                if record.isTombstone { continue }
                if let delimiter, let common = rollUp(key.bytes, prefix: prefix, delimiter: delimiter) {
                    listing.prefixes.append(common)
                    listing.bytes += JSONText.count(common) + 8
                    cursor = pastEverything(under: common)
                    seeked = true
                    break
                }
                listing.keys.append(key)
                listing.records.append(record)
                listing.bytes += cost(key, record)
                if isFull { break }
            }
            // Full, perhaps in the middle of a batch: `next` says where the rest starts.
            if isFull { break }
            // A short batch means the index has no more, unless the scan stopped at a key that
            // rolls up (a deleted one, whose prefix may still hold live keys).
            let stoppedEarly = delimiter.flatMap { delimiter in batch.last.map { rollUp($0.0.bytes, prefix: prefix, delimiter: delimiter) != nil } } ?? false
            if !seeked, !stoppedEarly, batch.count < wanted { return listing }
        }
        listing.next = listing.prefixes.last.map { lastPrefix in
            listing.keys.last.map { $0.bytes.lexicographicallyPrecedes(lastPrefix) ? lastPrefix : $0.bytes } ?? lastPrefix
        } ?? listing.keys.last?.bytes
        return listing
    }

    /// The common prefix `key` rolls up into: the prefix, then up to and including the
    /// first delimiter after it; nil when there is none.
    static func rollUp(_ key: [UInt8], prefix: [UInt8], delimiter: [UInt8]) -> [UInt8]? {
        guard key.count >= prefix.count + delimiter.count, key.starts(with: prefix) else { return nil }
        var index = prefix.count
        while index + delimiter.count <= key.count {
            if key[index..<(index + delimiter.count)].elementsEqual(delimiter) { return Array(key[..<(index + delimiter.count)]) }
            index += 1
        }
        return nil
    }
}
