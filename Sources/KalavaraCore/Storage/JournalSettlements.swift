import Foundation

/// What a start-up must make true of value files, as recorded since the journal's last
/// checkpoint: the bytes a small value's file must hold, or that a file must be gone (see
/// `JournalLog`), each with the position of its record; and the records whose file
/// operation is not done yet. Pure bookkeeping, under the log's lock.
struct JournalSettlements {
    typealias Entry = UncommittedJournal.Entry
    typealias Settlement = UncommittedJournal.Settlement

    private(set) var records: [Entry: (position: Int, settlement: Settlement)] = [:]
    /// Bytes of values whose only durable copy is the journal now.
    private(set) var valueBytes = 0
    /// Positions whose file operation (the rename, the removal) is not done yet: a
    /// checkpoint must wait for them before its syncfs covers them.
    var inFlight = Set<Int>()

    /// As read from the file at start-up (position 0: before any record of this run).
    init(_ loaded: [Entry: Settlement] = [:]) {
        for (entry, settlement) in loaded { settle(entry, settlement, at: 0) }
    }

    /// Records what start-up must make true of this version's file, as of `position`.
    mutating func settle(_ entry: Entry, _ settlement: Settlement?, at position: Int) {
        if case .value(let bytes, _)? = records[entry]?.settlement { valueBytes -= bytes.count }
        if case .value(let bytes, _)? = settlement { valueBytes += bytes.count }
        records[entry] = settlement.map { (position, $0) }
    }

    /// Nothing is left for start-up to do about this version's file.
    mutating func forget(_ entry: Entry) { settle(entry, nil, at: 0) }

    /// Forgets every record up to `position` (a checkpoint made them durable).
    mutating func forget(upTo position: Int) {
        for (entry, record) in records where record.position <= position { forget(entry) }
    }

    /// Whether the journal holds the bytes of this version as its durable copy now.
    func holdsValue(_ entry: Entry) -> Bool {
        if case .value? = records[entry]?.settlement { return true }
        return false
    }

    var isEmpty: Bool { records.isEmpty }
}
