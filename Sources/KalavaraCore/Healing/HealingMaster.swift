/// The master as healing (the reconciler and the index rebuild) sees it: the index records
/// and the few changes healing makes to them, the volume registry, the key locks, and the
/// rebuild's hold on the version clock. Healing holds this, not the whole `Master`: what
/// it may touch is this list, and a test can stand in for the master.
protocol HealingMaster: AnyObject, Sendable {
    /// The volumes: placement, liveness, drains.
    var registry: VolumeRegistry { get }
    /// The per-key locks the commit rules take: a change healing makes to a record is made
    /// under its key's.
    var keyLocks: StripedLock { get }
    /// True while the index is rebuilt: records may be missing, so placement waits.
    var isRebuilding: Bool { get }

    // MARK: Reading the index

    func record(for key: Key) throws -> IndexRecord?
    /// A page of records in key order after `cursor` (see `Index.walk`).
    func walkIndex(after cursor: [UInt8]?, limit: Int) throws
        -> (records: [(Key, IndexRecord)], last: [UInt8]?, rows: Int, damaged: Int)
    func pendingRemoval(volume: UInt16, key: Key) throws -> UInt64?
    func pendingRemovals(volume: UInt16, limit: Int) -> [(key: Key, below: UInt64)]

    // MARK: Changing it

    /// Adds a removal to `changes` (see `Index.queueRemoval`).
    func queueRemoval(_ changes: inout Index.Changes, volume: UInt16, key: Key, below: UInt64) throws
    func apply(_ changes: Index.Changes, durable: Bool) throws
    /// The reconciler's commit of new holders for the same version (see `Master.commitHolders`).
    func commitHolders(_ key: Key, version: UInt64, expected: [UInt16], new: [UInt16]) throws -> HoldersOutcome
    /// Drops a holder whose copy is bad or missing (see `Master.dropCorruptHolder`).
    func dropCorruptHolder(_ key: Key, version: UInt64, holder: UInt16, keepingLast: Bool) throws -> Bool

    // MARK: Progress kept in the index

    func repairCursor() throws -> [UInt8]?
    func setRepairCursor(_ cursor: [UInt8]?) throws
    func setRebuildPending(_ pending: Bool) throws

    // MARK: The rebuild

    func setRebuilding(_ running: Bool)
    /// Moves the version clock past a version found on a volume.
    func advanceClock(past version: UInt64) throws
    /// Asks the reconciler for a full pass (after a rebuild).
    func requestRepairPass()
}

extension Master: HealingMaster {
    func record(for key: Key) throws -> IndexRecord? { try index.record(for: key) }

    func walkIndex(after cursor: [UInt8]?, limit: Int) throws
        -> (records: [(Key, IndexRecord)], last: [UInt8]?, rows: Int, damaged: Int) {
        try index.walk(after: cursor, limit: limit)
    }

    func pendingRemoval(volume: UInt16, key: Key) throws -> UInt64? { try index.pendingRemoval(volume: volume, key: key) }

    func pendingRemovals(volume: UInt16, limit: Int) -> [(key: Key, below: UInt64)] {
        index.pendingRemovals(volume: volume, limit: limit)
    }

    func queueRemoval(_ changes: inout Index.Changes, volume: UInt16, key: Key, below: UInt64) throws {
        try index.queueRemoval(&changes, volume: volume, key: key, below: below)
    }

    func apply(_ changes: Index.Changes, durable: Bool) throws { try index.apply(changes, durable: durable) }

    func repairCursor() throws -> [UInt8]? { try index.repairCursor() }
    func setRepairCursor(_ cursor: [UInt8]?) throws { try index.setRepairCursor(cursor) }
    func setRebuildPending(_ pending: Bool) throws { try index.setRebuildPending(pending) }

    func setRebuilding(_ running: Bool) { rebuilding.store(running, ordering: .sequentiallyConsistent) }
    func advanceClock(past version: UInt64) throws { try clock.advance(past: version) }
    func requestRepairPass() { reconciler.requestPass() }
}
