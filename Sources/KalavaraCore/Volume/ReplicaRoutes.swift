import Foundation
import KalavaraHTTP
import KalavaraSupport

/// The volume-to-volume side of replication and healing, under `/internal/`: a replica
/// receives copies from the placement's first volume (or, for repair, from any holder) and
/// hears the outcome of their commit; the master's removal queue drops stale copies through
/// here too, and a rebuild reads the inventory.
extension Volume {
    /// `PUT` and `DELETE /internal/replica/KEY`.
    func replica(_ key: Key, _ request: HTTPRequest, _ body: MessageBody) throws -> HTTPResponse {
        let parameters = try QueryParameters(request.query)
        if request.method == "PUT" {
            // A copy for a write the sending volume will commit, or a repair copy the master
            // will commit: durable and journaled here, committed or discarded later. A copy
            // that comes with a checksum must match it.
            guard let ticket = try PlacementTicket(parameters) else { throw HTTPError(400, "replica copy without a ticket") }
            try checkAddressed(ticket, as: .replica)
            if let masterURL = ticket.master { master.learnMaster(masterURL) }
            var expected: UInt32?
            if let text = request.headers[VolumeHeaders.checksum] {
                guard let value = UInt32(text, radix: 16) else { throw HTTPError(400, "bad \(VolumeHeaders.checksum)") }
                expected = value
            }
            // A version is written once. A repair copy of a version already here is
            // confirmed if the copy here is intact and the same; a copy here that fails its
            // checksum is quarantined and replaced; anything else is refused, deleting nothing.
            if let expected, store.holds(key, version: ticket.version) {
                let held = try? store.open(key, version: ticket.version)
                switch try held.map({ try store.verify($0) }) {
                case .good? where held?.checksum == expected:
                    _ = body.discardRemaining(limit: Int.max)
                    return .text(200, "already held, \(held!.size) bytes")
                case .corrupt?, nil:
                    journalRemoval(key, ticket.version)
                    _ = try store.quarantine(key, version: ticket.version, checked: held)
                default:
                    throw StorageError.versionExists.httpError
                }
            }
            let (size, _) = try receiveValue(key, version: ticket.version, from: body, expecting: expected)
            return .text(200, "durable, \(size) bytes")
        }
        if let below = parameters["below"].flatMap(UInt64.init) {
            for version in store.versions(of: key) where version < below { try dropVersion(key, version) }
        } else if let exact = parameters["exact"].flatMap(UInt64.init) {
            try dropVersion(key, exact)
        } else {
            throw HTTPError(400, "replica removal needs below= or exact=")
        }
        return HTTPResponse(status: 204)
    }

    /// `POST /internal/committed/KEY?ver=V[&previous=P]`: the outcome of a write this
    /// volume holds a copy of.
    func committed(_ key: Key, _ parameters: QueryParameters) throws -> HTTPResponse {
        guard let version = parameters["ver"].flatMap(UInt64.init) else { throw HTTPError(400, "missing ver") }
        journal.strike(key, version: version)
        if parameters["previous"] != nil { scheduleSupersededDrop(key, by: version) }
        return .text(200, "noted")
    }

    /// Removes a version's file. The removal is journaled first, so that no start-up puts
    /// back a file the journal still holds a copy of; once that record is durable the
    /// file goes without a directory fsync (the next checkpoint's syncfs covers it).
    func dropVersion(_ key: Key, _ version: UInt64) throws {
        guard store.holds(key, version: version) else {
            journal.strike(key, version: version)
            return
        }
        _ = try journal.removing([.init(key: key, version: version)]) { durably in try store.remove(key, version: version, durably: durably) }
        journal.strike(key, version: version)
    }

    /// `POST /internal/copy/KEY?ver=V&to=URL`: the master's reconciler has this volume
    /// stream its copy of V to another volume. The bytes go with their checksum, which the
    /// target checks before it keeps them; a copy that fails it here too is quarantined.
    func copyOut(_ key: Key, _ parameters: QueryParameters) throws -> HTTPResponse {
        guard let version = parameters["ver"].flatMap(UInt64.init),
              let target = parameters["to"].flatMap(VolumeRegistry.normalize) else {
            throw HTTPError(400, "copy needs ver and a target volume URL (to)")
        }
        guard let value = try store.open(key, version: version) else { return .text(404, "no copy of that version here") }
        guard value.isWhole else {
            quarantine(value, reason: "has the wrong size")
            return .text(422, "this copy is corrupt")
        }
        var headers = HTTPHeaders()
        if let checksum = value.checksum { headers.add(VolumeHeaders.checksum, String(checksum, radix: 16)) }
        let ticket = PlacementTicket(version: version)
        guard let url = HTTPURL("\(target)/internal/replica/\(key.pathComponent)?\(ticket.query)") else {
            throw HTTPError(400, "bad target URL")
        }
        let upload: StreamingUpload
        do {
            upload = try replicaClient.startUpload("PUT", url, headers: headers, contentLength: value.size)
        } catch {
            return .text(502, "target \(target) unreachable: \(error)")
        }
        var crc = CRC32()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: PendingWrite.streamBufferBytes, alignment: 16)
        defer { buffer.deallocate() }
        var offset = 0
        while offset < value.size {
            let count = pread(value.file.fd, buffer.baseAddress, min(buffer.count, value.size - offset),
                              off_t(value.valueOffset + offset))
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                upload.abandon()
                throw StorageError.io("reading a value to copy it", count < 0 ? errno : EIO)
            }
            let piece = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            crc.update(piece)
            upload.write(piece)
            offset += count
        }
        let answer = try? upload.finish()
        if let expected = value.checksum, crc.value != expected {
            quarantine(value, reason: "failed its checksum while being copied")
            return .text(422, "this copy is corrupt")
        }
        guard let answer, answer.status == 200 else {
            return .text(502, "target \(target) answered " + (answer.map { "\($0.status) \($0.text)" } ?? "nothing"))
        }
        return .text(200, "copied \(value.size) bytes to \(target)")
    }

    /// `GET /internal/inventory?after=NAME&limit=N`: a page of this volume's value files
    /// (see `Inventory`), for a master rebuilding its index.
    func inventory(_ parameters: QueryParameters) throws -> HTTPResponse {
        let limit = min(max(parameters["limit"].flatMap(Int.init) ?? 1000, 1), 10_000)
        let names = store.fileNames(after: parameters["after"], limit: limit)
        var entries: [Inventory.Entry] = []
        for name in names {
            // The scrub deals with bad ones; a cut or grown file's size is not the value's.
            guard let value = try? store.open(fileNamed: name), value.isWhole else { continue }
            entries.append(Inventory.Entry(key: value.key, version: value.version, size: UInt64(value.size),
                                           checksum: value.checksum))
        }
        let page = Inventory.Page(entries: entries, next: names.count == limit ? names.last : nil)
        return .text(200, page.text.trimmingCharacters(in: .newlines))
    }
}
