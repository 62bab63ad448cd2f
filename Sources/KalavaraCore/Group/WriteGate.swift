/// Who may write a database, and what a write waits for before it counts: the seam through
/// which a master group turns every index write into a replicated one, without the index
/// knowing there is a group. A single master has none.
protocol WriteGate: AnyObject, Sendable {
    /// Before a write: throws when this database may not be written now (a standby's index:
    /// only the leader's log reaches it).
    func admit() throws
    /// After a write that RocksDB logged (not yet synced) at or before `sequence`: the
    /// standbys may fetch it now.
    func logged(through sequence: UInt64)
    /// After that write was synced here too: returns once it counts (on every in-sync
    /// standby); throws when it never will, so the caller acknowledges nothing.
    func settle(through sequence: UInt64) throws
}
