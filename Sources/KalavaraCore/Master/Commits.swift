import Foundation

/// The commit protocol, master side: volumes report durable writes and deletes here, and
/// only a commit changes the index.
///
/// Rules, per key, under the key's lock:
/// - a commit older than the key's current version (value or tombstone) is refused with
///   `409`, so concurrent writers converge on the newest version the master issued;
/// - a commit of the current version again is accepted (a volume retrying after a lost
///   answer), so commits are idempotent;
/// - a commit whose ticket is older than the ticket lifetime is refused: tombstones are
///   kept exactly that long, so no late write can resurrect a deleted key.
extension Master {
    /// `POST /internal/commit?op=put|delete&key=K&ver=V&size=S&h=URL,URL`
    func commit(_ parameters: QueryParameters) throws -> HTTPResponse {
        let key = try Key(parameters.bytes("key") ?? [])
        guard let version = parameters["ver"].flatMap(UInt64.init), version > 0 else {
            throw HTTPError(400, "commit without a valid version")
        }
        guard version <= clock.lastIssued else { throw HTTPError(400, "commit of a version never issued") }
        guard VersionClock.issueTime(of: version) >= Date().timeIntervalSince1970 - configuration.ticketLifetime else {
            return .text(409, "ticket expired: commit arrived after the ticket lifetime")
        }
        switch parameters["op"] {
        case "put":
            guard let size = parameters["size"].flatMap(UInt64.init) else { throw HTTPError(400, "commit without a size") }
            let holders = try (parameters["h"] ?? "").split(separator: ",").map { url -> UInt16 in
                guard let id = registry.id(of: String(url)) else { throw HTTPError(400, "unknown volume \(url)") }
                return id
            }
            guard !holders.isEmpty else { throw HTTPError(400, "commit without holders") }
            return try commitWrite(key, IndexRecord(version: version, size: size, holders: holders))
        case "delete":
            return try commitDelete(key, version: version)
        default:
            throw HTTPError(400, "commit op must be put or delete")
        }
    }

    private func commitWrite(_ key: Key, _ record: IndexRecord) throws -> HTTPResponse {
        try keyLocks.withLock(for: key) {
            if let current = try index.record(for: key) {
                if current.version > record.version {
                    return .text(409, "a newer version (\(current.version)) is already committed")
                }
                if current.version == record.version {
                    return current == record ? .text(200, "committed") : .text(409, "version already used")
                }
            }
            try index.setRecord(record, for: key)
            metrics.count("kalavara_commits_total", "op=\"put\"")
            return .text(200, "committed")
        }
    }

    private func commitDelete(_ key: Key, version: UInt64) throws -> HTTPResponse {
        try keyLocks.withLock(for: key) {
            guard let current = try index.record(for: key) else { return .text(200, "nothing to delete") }
            if current.version > version {
                return .text(409, "a newer version (\(current.version)) is already committed")
            }
            if current.isTombstone { return .text(200, "already deleted") }
            // The tombstone lists the holders of the deleted value until they confirm removal.
            try index.setTombstone(IndexRecord(version: version, isTombstone: true, size: 0, holders: current.holders),
                                   for: key)
            metrics.count("kalavara_commits_total", "op=\"delete\"")
            return .text(200, "deleted")
        }
    }

    /// `POST /internal/purged?key=K&ver=V&h=URL`: a holder has removed its copies of a
    /// deleted key. The tombstone itself stays until it expires.
    func purged(_ parameters: QueryParameters) throws -> HTTPResponse {
        let key = try Key(parameters.bytes("key") ?? [])
        guard let version = parameters["ver"].flatMap(UInt64.init),
              let holder = parameters["h"].flatMap({ registry.id(of: $0) }) else {
            throw HTTPError(400, "purge report needs ver and a known h")
        }
        return try keyLocks.withLock(for: key) {
            guard var record = try index.record(for: key), record.isTombstone, record.version == version else {
                return .text(200, "nothing to record")
            }
            record.holders.removeAll { $0 == holder }
            try index.setRecord(record, for: key)
            return .text(200, "recorded")
        }
    }

    /// Drops tombstones older than the ticket lifetime: no write issued before them can
    /// commit any more, so they protect nothing.
    func expireTombstones() {
        let cutoff = UInt64((Date().timeIntervalSince1970 - configuration.ticketLifetime) * 1000) << 16
        do {
            while true {
                let expired = index.tombstones(issuedBefore: cutoff, limit: 1000)
                for (key, version) in expired {
                    try keyLocks.withLock(for: key) {
                        let record = try index.record(for: key)
                        let stillThisTombstone = record?.isTombstone == true && record?.version == version
                        try index.forgetTombstone(key: key, version: version, removeRecord: stillThisTombstone)
                    }
                }
                if expired.count < 1000 { break }
            }
        } catch {
            Log.error("expiring tombstones: \(error)")
        }
    }
}
