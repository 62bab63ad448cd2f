import Foundation
import KalavaraHTTP

/// What a master group keeps in etcd, under `/<group>/`:
/// - `leader` → `LeaderRecord`, attached to the leader's lease: it vanishes when the leader
///   stops renewing, which is what lets another master take over;
/// - `sync` → `SyncRecord`, no lease: who may take over. Only the leader changes it, in a
///   transaction that checks it still holds `leader`;
/// - `members/<url>` → a member's presence, attached to that member's lease.
struct GroupKeys: Sendable {
    let prefix: String
    init(group: String) { prefix = "/\(group)/" }
    var leader: String { prefix + "leader" }
    var sync: String { prefix + "sync" }
    var members: String { prefix + "members/" }
    func member(_ url: String) -> String { members + url }
}

/// The leader's key: who leads, in which epoch, under which lease.
struct LeaderRecord: Codable, Equatable, Sendable {
    var url: String
    var epoch: UInt64
    var lease: Int64
}

/// Who holds everything the group has acknowledged: the leader of `epoch` and the standbys
/// it waits for. A master not named here may never lead: its index may lack acknowledged
/// writes.
struct SyncRecord: Codable, Equatable, Sendable {
    var epoch: UInt64
    var leader: String
    var members: [String]

    func mayLead(_ url: String) -> Bool { leader == url || members.contains(url) }
}

/// Where each epoch's history begins in the index's log: epoch `n` started with the
/// sequence after `start`. Kept in the index itself (replicated like everything else), so a
/// returning standby can tell whether what it holds is a prefix of the leader's history or
/// has writes the group never acknowledged.
struct EpochHistory: Equatable, Sendable {
    var epochs: [(epoch: UInt64, start: UInt64)] = []

    static func == (a: EpochHistory, b: EpochHistory) -> Bool {
        a.epochs.elementsEqual(b.epochs) { $0.epoch == $1.epoch && $0.start == $1.start }
    }

    var current: UInt64 { epochs.last?.epoch ?? 0 }

    /// Whether a member whose history ends in `epoch` at sequence `last` (its last applied)
    /// holds a prefix of this history: always when it is in the current epoch and not ahead;
    /// in an earlier epoch of this history, only if it stopped before the next one began; in
    /// an epoch this history never had (or none), never.
    func holdsPrefix(epoch: UInt64, last: UInt64, latest: UInt64) -> Bool {
        guard last <= latest, let position = epochs.firstIndex(where: { $0.epoch == epoch }) else { return false }
        guard position + 1 < epochs.count else { return true } // the current epoch
        return last <= epochs[position + 1].start
    }

    var encoded: [UInt8] {
        var bytes: [UInt8] = []
        for entry in epochs {
            bytes.append(littleEndian: entry.epoch)
            bytes.append(littleEndian: entry.start)
        }
        return bytes
    }

    init(epochs: [(epoch: UInt64, start: UInt64)] = []) { self.epochs = epochs }

    init?(encoded bytes: [UInt8]) {
        guard bytes.count % 16 == 0 else { return nil }
        for offset in stride(from: 0, to: bytes.count, by: 16) {
            epochs.append((bytes.readLittleEndian(UInt64.self, at: offset), bytes.readLittleEndian(UInt64.self, at: offset + 8)))
        }
    }
}

extension Index {
    private static let epochsKey = Array("m/epochs".utf8)

    /// The group's epochs as this index has them (empty: never in a group, or a fresh index).
    func epochHistory() throws -> EpochHistory {
        guard let bytes = try db.get(Self.epochsKey) else { return EpochHistory() }
        guard let history = EpochHistory(encoded: bytes) else { throw HTTPError(500, "the index's epoch history is damaged") }
        return history
    }

    /// Starts `epoch` after everything the index holds now: a new leader's first write.
    func beginEpoch(_ epoch: UInt64) throws {
        var history = try epochHistory()
        history.epochs.append((epoch, db.latestSequence))
        try db.put(Self.epochsKey, history.encoded, sync: true)
    }
}
