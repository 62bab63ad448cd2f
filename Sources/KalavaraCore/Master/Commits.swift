import Foundation
import KalavaraHTTP
import KalavaraSupport

/// The commit protocol, master side: volumes report durable writes and deletes here, and
/// only a commit changes the index.
///
/// Rules, per key, under the key's lock:
/// - a commit older than the key's current version (value or tombstone), or at or below
///   its fence (`floor`), is refused with `409`, so concurrent writers converge on the
///   newest version the master issued, and a version declared an orphan stays one;
/// - a commit of the current version again is accepted only for the identical content
///   (same holders, size and checksum: a volume retrying after a lost answer), so commits
///   are idempotent and a version is never rewritten;
/// - a commit whose ticket is older than the ticket lifetime is refused: tombstones are
///   kept exactly that long, so no late write can resurrect a deleted key. Both ages are
///   measured against the version clock's present, which never runs backwards (a wall
///   clock stepped back cannot make an old ticket young again), and the check is made
///   under the key's lock, so a tombstone expired meanwhile was expired against a present
///   no later than the one the ticket is measured against.
/// Copies that stop being current (a delete, an overwrite) are queued for removal in the
/// same synced batch as the record, so none is forgotten even if its volume crashes.
///
/// Each decision is a `CommitOutcome`; the route answers its `response`. A malformed
/// commit is thrown as a `400`, which decides nothing.
extension Master {
    /// `POST /internal/commit?op=put|delete&key=K&ver=V&size=S&crc=HEX&h=URL,URL[&md5=HEX][&attrs=A]`
    func commit(_ parameters: QueryParameters) throws -> CommitOutcome {
        let key = try Key(parameters.bytes("key") ?? [])
        let version = try issuedVersion(parameters)
        Log.debug("commit", ["key": "\(key)", "ver": "\(version)", "op": "\(parameters["op"] ?? "")",
                             "rid": "\(parameters["rid"] ?? "-")"])
        switch parameters["op"].flatMap(CommitOperation.init(rawValue:)) {
        case .put:
            guard let size = parameters["size"].flatMap(UInt64.init) else { throw HTTPError(400, "commit without a size") }
            let (holders, departed) = try holderIDs(parameters["h"] ?? "")
            if let departed { return .volumeRemoved(departed) }
            guard !holders.isEmpty else { throw HTTPError(400, "commit without holders") }
            var checksum: UInt32?
            if let text = parameters["crc"] {
                guard let value = UInt32(text, radix: 16) else { throw HTTPError(400, "commit with a bad crc") }
                checksum = value
            }
            var md5: [UInt8]?
            if let text = parameters["md5"] {
                guard let value = Hex.decode(text), value.count == MD5.byteCount else { throw HTTPError(400, "commit with a bad md5") }
                md5 = value
            }
            let attributes = parameters.bytes("attrs")
            guard (attributes?.count ?? 0) <= IndexRecord.maxAttributeBytes else {
                throw HTTPError(400, "attributes over \(IndexRecord.maxAttributeBytes) bytes")
            }
            return try commitWrite(key, IndexRecord(version: version, size: size, holders: holders, checksum: checksum,
                                                    md5: md5, attributes: attributes))
        case .delete:
            return try commitDelete(key, version: version)
        case nil:
            throw HTTPError(400, "commit op must be put or delete")
        }
    }

    private func commitWrite(_ key: Key, _ record: IndexRecord) throws -> CommitOutcome {
        try keyLocks.withLock(for: key) {
            if hasExpired(record.version) { return .expired }
            let current = try index.record(for: key)
            if let current {
                if current.version == record.version, !current.isTombstone {
                    let same = current.holders == record.holders && current.size == record.size
                        && current.checksum == record.checksum && current.md5 == record.md5
                        && current.attributes == record.attributes
                    return same ? .alreadyCommitted : .conflict(version: record.version)
                }
                if current.rulesOut(record.version) || current.version == record.version {
                    return .superseded(by: max(current.version, current.floor), operation: .put)
                }
            }
            var changes = Index.Changes()
            var stored = record
            stored.floor = current?.floor ?? 0
            changes.setRecord(stored, for: key)
            if let current, !current.isTombstone {
                // Every holder of the replaced value must drop it, those that hold the new one
                // too: they report it done themselves, and if one crashes before it does, the
                // removal queue still has the entry.
                for holder in current.holders {
                    try index.queueRemoval(&changes, volume: holder, key: key, below: record.version)
                }
            }
            try index.apply(changes)
            commits.put.increment()
            return .committed(previous: current.flatMap { $0.isTombstone ? nil : $0.version })
        }
    }

    private func commitDelete(_ key: Key, version: UInt64) throws -> CommitOutcome {
        try keyLocks.withLock(for: key) {
            if hasExpired(version) { return .expired }
            guard let current = try index.record(for: key) else { return .nothingToDelete }
            if current.isTombstone, current.version >= version { return .alreadyDeleted }
            if current.rulesOut(version) {
                return .superseded(by: max(current.version, current.floor), operation: .delete)
            }
            // The tombstone lists the holders of the deleted value until they confirm removal;
            // the removal queue makes sure they do, even those that are down right now.
            var changes = Index.Changes()
            let holders = current.holders
            changes.setRecord(IndexRecord(version: version, isTombstone: true, size: 0, holders: holders,
                                          floor: current.floor), for: key)
            changes.queueExpiry(of: key, version: version)
            for holder in holders { try index.queueRemoval(&changes, volume: holder, key: key, below: version) }
            try index.apply(changes)
            commits.delete.increment()
            return .deleted
        }
    }

    /// Whether a commit's ticket is past the ticket lifetime (see the rules above).
    private func hasExpired(_ version: UInt64) -> Bool {
        clock.hasExpired(version, lifetime: configuration.ticketLifetime)
    }

    /// `POST /internal/purged?key=K&ver=V&h=URL`: a volume has removed its copies of the key
    /// older than V. Drops the matching removal and, for a tombstone, the pending holder.
    func purged(_ parameters: QueryParameters) throws -> HTTPResponse {
        let key = try Key(parameters.bytes("key") ?? [])
        guard let version = parameters["ver"].flatMap(UInt64.init),
              let holder = parameters["h"].flatMap({ registry.id(of: $0) }) else {
            throw HTTPError(400, "purge report needs ver and a known h")
        }
        try recordRemoval(key, volume: holder, below: version)
        return .text(200, "recorded")
    }

    /// `POST /internal/purged?h=URL` with `VERSION KEY` lines: many such removals of one
    /// holder at once (a volume's batch).
    func purged(_ request: HTTPRequest, _ body: MessageBody) throws -> HTTPResponse {
        let parameters = try QueryParameters(request.query)
        guard parameters["key"] == nil else { return try purged(parameters) }
        guard let holder = parameters["h"].flatMap({ registry.id(of: $0) }) else {
            throw HTTPError(400, "purge report needs a known h")
        }
        let removals = try versionedKeys(request, body)
        for (version, key) in removals { try recordRemoval(key, volume: holder, below: version) }
        return .text(200, "recorded \(removals.count)")
    }

    /// Notes that `volume` holds no copy of `key` older than `below` any more.
    func recordRemoval(_ key: Key, volume: UInt16, below: UInt64) throws {
        try keyLocks.withLock(for: key) {
            var changes = Index.Changes()
            if let pending = try index.pendingRemoval(volume: volume, key: key), pending <= below {
                changes.dropRemoval(volume: volume, key: key)
            }
            if var record = try index.record(for: key), record.isTombstone, record.version <= below,
               record.holders.contains(volume) {
                record.holders.removeAll { $0 == volume }
                changes.setRecord(record, for: key)
            }
            // Not synced: if a crash loses this, the removal is simply asked for again.
            try index.apply(changes, durable: false)
        }
    }

    /// `POST /internal/resolve?key=K&ver=V&h=URL`: a volume holds version V of K and never
    /// learnt whether it was committed. Answers `committed` if V is the current version and
    /// the volume one of its holders; otherwise `orphan`, after fencing V so that a commit
    /// of V arriving later is refused: the volume may delete its file as soon as it hears.
    ///
    /// A version this master never issued can never be committed: `orphan`, without a fence
    /// (a fence in the future would refuse the key's writes until the clock passed it).
    func resolve(_ parameters: QueryParameters) throws -> HTTPResponse {
        let key = try Key(parameters.bytes("key") ?? [])
        let version = try requestedVersion(parameters)
        guard version <= clock.lastIssued else { return Resolution.orphan.response }
        guard let holder = parameters["h"].flatMap({ registry.id(of: $0) }) else {
            throw HTTPError(400, "resolve needs the asking volume's URL (h)")
        }
        return try keyLocks.withLock(for: key) {
            var changes = Index.Changes()
            let current = try index.record(for: key)
            if let record = current, record.version == version, !record.isTombstone, record.holders.contains(holder) {
                return Resolution.committed.response
            }
            // While the index is being rebuilt, the record may not be complete yet: no
            // verdict but "committed". Likewise for a copy the reconciler is making now.
            if isRebuilding || (current?.version == version && reconciler.isFixing(key)) {
                return .text(503, "no verdict yet: ask again later")
            }
            if var record = current {
                if record.version == version, !record.isTombstone {
                    // The current version, on a volume that is not a holder: an extra copy
                    // (a repair copy whose commit lost). No fence: the version is committed.
                    return Resolution.orphan.response
                }
                if !record.rulesOut(version) {
                    record.floor = version
                    changes.setRecord(record, for: key)
                }
            } else {
                // No record: fence with a tombstone at V, which expires like any other.
                changes.setRecord(IndexRecord(version: version, isTombstone: true, size: 0, holders: [], isFence: true), for: key)
                changes.queueExpiry(of: key, version: version)
            }
            try index.apply(changes)
            return Resolution.orphan.response
        }
    }

    /// Drops tombstones older than the ticket lifetime: no write issued before them can
    /// commit any more, so they protect nothing. The cutoff is a lifetime before the version
    /// clock's present, settled (persisted) first, so the clock never measures a ticket
    /// against an earlier present again, whatever the wall clock does next.
    func expireTombstones() {
        do {
            let cutoff = VersionClock.cutoff(at: try clock.settlePresent(), lifetime: configuration.ticketLifetime)
            while true {
                let expired = index.tombstones(issuedBefore: cutoff, limit: 1000)
                for (key, version) in expired {
                    try keyLocks.withLock(for: key) {
                        var changes = Index.Changes()
                        changes.dropExpiry(of: key, version: version)
                        if let record = try index.record(for: key), record.isTombstone, record.version == version {
                            if record.floor > record.version {
                                // A fence above the tombstone still guards a younger ticket: keep
                                // it as a tombstone of its own, expiring in its own time.
                                changes.setRecord(IndexRecord(version: record.floor, isTombstone: true, size: 0,
                                                              holders: record.holders, floor: record.floor), for: key)
                                changes.queueExpiry(of: key, version: record.floor)
                            } else {
                                changes.removeRecord(for: key)
                            }
                        }
                        try index.apply(changes)
                    }
                }
                if expired.count < 1000 { break }
            }
        } catch {
            Log.error("expiring tombstones: \(error)")
        }
    }

    // MARK: Parameters

    private func requestedVersion(_ parameters: QueryParameters) throws -> UInt64 {
        guard let version = parameters["ver"].flatMap(UInt64.init), version > 0 else {
            throw HTTPError(400, "request without a valid version")
        }
        return version
    }

    private func issuedVersion(_ parameters: QueryParameters) throws -> UInt64 {
        let version = try requestedVersion(parameters)
        guard version <= clock.lastIssued else { throw HTTPError(400, "version \(version) was never issued") }
        return version
    }

    /// The registry ids of a commit's holders: known volumes, each once, at most 16. Or
    /// the first that has left the cluster (`departed`): a write whose ticket predates a
    /// drain's end must not land on the volume that left.
    private func holderIDs(_ list: String) throws -> (ids: [UInt16], departed: String?) {
        var ids: [UInt16] = []
        for url in list.split(separator: ",") {
            guard let id = registry.id(of: String(url)) else { throw HTTPError(400, "unknown volume \(url)") }
            guard registry.volume(id)?.mode != .removed else { return ([], String(url)) }
            ids.append(id)
        }
        guard ids.count <= 16, Set(ids).count == ids.count else {
            throw HTTPError(400, "a commit names each holder once, 16 at most")
        }
        return (ids, nil)
    }
}

// MARK: Healing

/// What came of the reconciler's commit of new holders (`Master.commitHolders`).
enum HoldersOutcome: Equatable {
    /// The index lists the new holders.
    case committed
    /// Refused: the key moved on (a newer write, a delete); no copy of this version is wanted.
    case superseded
    /// Refused: the version is current but its holders changed meanwhile; these are they.
    case holdersChanged([UInt16])
}

extension Master {
    /// The reconciler's commit: the same version of `key`, held by `new` instead of
    /// `expected`. Refused if the record changed since the reconciler read it — a client's
    /// write or delete, or a holder dropped as corrupt — so healing never reverts anything.
    /// Holders that leave get a removal queued (for that version too); holders that arrive
    /// have any older removal of theirs cut back below this version.
    func commitHolders(_ key: Key, version: UInt64, expected: [UInt16], new: [UInt16]) throws -> HoldersOutcome {
        try keyLocks.withLock(for: key) {
            guard var record = try index.record(for: key), !record.isTombstone, record.version == version else { return .superseded }
            guard record.holders == expected else { return .holdersChanged(record.holders) }
            var changes = Index.Changes()
            record.holders = new
            changes.setRecord(record, for: key)
            for gone in expected where !new.contains(gone) {
                try index.queueRemoval(&changes, volume: gone, key: key, below: version == .max ? version : version + 1)
            }
            for arrived in new where !expected.contains(arrived) {
                if let pending = try index.pendingRemoval(volume: arrived, key: key), pending > version {
                    changes.queueRemoval(volume: arrived, key: key, below: version)
                }
            }
            try index.apply(changes)
            commits.holders.increment()
            return .committed
        }
    }

    /// `POST /internal/corrupt?key=K&ver=V&h=URL`: a volume found its copy of V bad (and
    /// moved it to quarantine). The holder is dropped and the key repaired from another.
    /// `?file=STEM.VERSION&h=URL` instead: a file whose header is too damaged to name its
    /// key; versions are unique across keys, so the next pass finds the key by its version.
    func corrupt(_ parameters: QueryParameters) throws -> HTTPResponse {
        if let file = parameters["file"] {
            guard let holder = parameters["h"].flatMap({ registry.id(of: $0) }), let dot = file.lastIndex(of: "."),
                  let version = UInt64(file[file.index(after: dot)...]) else {
                throw HTTPError(400, "damaged-file report needs file=STEM.VERSION and a known h")
            }
            reconciler.noteDamaged(volume: holder, stem: String(file[..<dot]), version: version)
            Log.error("volume \(parameters["h"] ?? "") reports damaged file \(file); its key is looked for by version")
            return .text(200, "noted: the next repair pass finds its key")
        }
        let key = try Key(parameters.bytes("key") ?? [])
        guard let version = parameters["ver"].flatMap(UInt64.init),
              let holder = parameters["h"].flatMap({ registry.id(of: $0) }) else {
            throw HTTPError(400, "corruption report needs ver and a known h")
        }
        let dropped = try dropCorruptHolder(key, version: version, holder: holder)
        Log.error("volume \(parameters["h"] ?? "") reports its copy of \(key) v\(version) corrupt"
                  + (dropped ? "; holder dropped, repairing from another copy" : " (not a current copy)"))
        if dropped { reconciler.requestKey(key) }
        return .text(200, dropped ? "holder dropped" : "not current")
    }

    /// Drops `holder` from the key's record if it holds the current version `version`: its
    /// copy is corrupt, or missing (a copy source answered 404). With `keepingLast`, not
    /// the last holder: a missing file may be a transient error, a corrupt one is known bad.
    func dropCorruptHolder(_ key: Key, version: UInt64, holder: UInt16, keepingLast: Bool = false) throws -> Bool {
        try keyLocks.withLock(for: key) { () throws -> Bool in
            guard var record = try index.record(for: key), !record.isTombstone, record.version == version,
                  record.holders.contains(holder), !keepingLast || record.holders.count > 1 else { return false }
            record.holders.removeAll { $0 == holder }
            try index.setRecord(record, for: key)
            return true
        }
    }

    /// A volume's body of `VERSION KEY` lines (key percent-encoded), its signature checked.
    private func versionedKeys(_ request: HTTPRequest, _ body: MessageBody) throws -> [(UInt64, Key)] {
        let bytes = try body.readAll(limit: 4 << 20)
        try SignedCall.verifyBody(request, bytes, secret: gate.secret)
        return try String(decoding: bytes, as: UTF8.self).split(separator: "\n").map { line in
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, let version = UInt64(parts[0]) else { throw HTTPError(400, "want VERSION KEY lines") }
            return (version, try Key(percentEncoded: parts[1]))
        }
    }

    /// `POST /internal/wanted?h=URL`, body `VERSION KEY` lines (keys percent-encoded): the
    /// scrub's backstop against leaked copies. Each line is answered `keep`, `drop` (the
    /// index positively knows a newer version or a delete of the key) or `unknown` (no
    /// record: a rebuild may still need the file). While a rebuild runs, everything is `keep`.
    func wanted(_ request: HTTPRequest, _ body: MessageBody) throws -> HTTPResponse {
        var answers: [WantedVerdict] = []
        for (version, key) in try versionedKeys(request, body) {
            if isRebuilding {
                answers.append(.keep)
            } else if let record = try index.record(for: key), !(record.isTombstone && record.isFence) {
                answers.append(record.version > version ? .drop : .keep)
            } else {
                answers.append(.unknown)
            }
        }
        return .text(200, answers.map(\.rawValue).joined(separator: "\n"))
    }
}
