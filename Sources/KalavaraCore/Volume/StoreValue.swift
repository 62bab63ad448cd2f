import Foundation
import KalavaraHTTP
import KalavaraSupport

/// PUT and DELETE on the volume a client was sent to (the placement's first volume): make
/// the change durable here and on the other replicas, commit it to the master, and answer
/// success only once the master has recorded it.
extension Volume {
    func storeValue(_ key: Key, ticket: PlacementTicket?, request: HTTPRequest, body: MessageBody) throws -> HTTPResponse {
        guard let ticket, !ticket.holders.isEmpty else {
            throw HTTPError(400, "a PUT must go through the master (this request has no placement ticket)")
        }
        guard master.masterURL(for: ticket) != nil else {
            throw HTTPError(400, "no master known to commit to: start the volume with -m")
        }
        try ticket.checkBodyLength(request.framing)
        let attributes = request.headers[VolumeHeaders.attributes].map { Array($0.utf8) }
        guard (attributes?.count ?? 0) <= IndexRecord.maxAttributeBytes else {
            throw HTTPError(400, "\(VolumeHeaders.attributes) over \(IndexRecord.maxAttributeBytes) bytes")
        }
        var md5: EVPDigest?
        switch request.headers[VolumeHeaders.digest] {
        case nil: break
        case "md5"?: md5 = MD5.hasher()
        default: throw HTTPError(400, "\(VolumeHeaders.digest) must be md5")
        }

        // 1. Open a stream to every other replica, then receive the body once, writing each
        //    piece here and to them as it arrives: memory stays one buffer, whatever the size.
        var uploads: [StreamingUpload] = []
        for replica in ticket.holders.dropFirst() {
            guard let url = HTTPURL("\(replica)/internal/replica/\(key.pathComponent)?\(ticket.query)") else { continue }
            do {
                uploads.append(try replicaClient.startUpload("PUT", url, contentLength: request.framing.declaredLength))
            } catch {
                uploads.forEach { $0.abandon() }
                return .text(503, "replica \(replica) unreachable: \(error)")
            }
        }
        let size: Int, checksum: UInt32
        do {
            (size, checksum) = try receiveValue(key, version: ticket.version, from: body, forwardingTo: uploads,
                                                hashing: md5, checkingLengthOf: ticket)
        } catch {
            uploads.forEach { $0.abandon() } // the replicas see the body end early and drop it
            throw error
        }

        // 2. Every replica must say its copy is durable. A full disk on a replica is the
        //    client's `507` too; any other failure a `503`.
        var failure: (status: Int, message: String)?
        var durable: [String] = []
        for upload in uploads {
            let answer = try? upload.finish()
            if answer?.status == 200 {
                durable.append(upload.url.origin)
            } else if failure == nil {
                failure = (answer?.status == 507 ? 507 : 503, "replica \(upload.url.authority) failed: "
                           + (answer.map { "\($0.status) \($0.text)" } ?? "no answer"))
            }
        }
        let durableReplicas = durable
        if let failure {
            try discard(key, version: ticket.version, replicas: durableReplicas)
            return .text(failure.status, failure.message.trimmingCharacters(in: .whitespacesAndNewlines))
        }

        // 3. Commit. Until the master records it, this version is invisible to readers
        //    going through the master, and the previous version stays on disk.
        let digest = md5?.finish()
        switch master.commitWrite(key, ticket, size: size, checksum: checksum, md5: digest, attributes: attributes) {
        case .accepted(let outcome):
            let previous = outcome.replaced
            journal.strike(key, version: ticket.version)
            Log.debug("stored", ["key": "\(key)", "ver": "\(ticket.version)", "size": "\(size)", "rid": "\(ticket.requestID ?? "-")"])
            // The replicas hear the outcome at once; the replaced version (invisible from now
            // on) goes a little later everywhere, so a reader the master sent to it just
            // before this commit still finds it.
            if !durableReplicas.isEmpty {
                afterAnswer { [self] in
                    let query = "ver=\(ticket.version)" + (previous.map { "&previous=\($0)" } ?? "")
                    notify(durableReplicas, key: key, path: "/internal/committed", query: query, method: "POST")
                }
            }
            if previous != nil { scheduleSupersededDrop(key, by: ticket.version) }
            var response = HTTPResponse.text(201, "stored")
            response.headers.set("ETag", Self.etag(ticket.version))
            if let digest { response.headers.set(VolumeHeaders.md5, Hex.encode(digest)) }
            return response
        case .refused(let refusal):
            try discard(key, version: ticket.version, replicas: durableReplicas)
            var answer = refusal.answer("commit")
            if let digest { answer.headers.set(VolumeHeaders.md5, Hex.encode(digest)) }
            return answer
        case .unreachable(let reason):
            // The master may or may not have recorded it: the files stay, journaled, and the
            // orphan sweep asks the master once the grace period has passed.
            Log.warning("commit failed: \(reason)", ["key": "\(key)", "ver": "\(ticket.version)", "rid": "\(ticket.requestID ?? "-")"])
            return .text(503, "value stored but not committed: \(reason)")
        }
    }

    /// Streams a body into a new version file (and to `forwards`), journals it as
    /// uncommitted and renames it into place. Returns the value's size and CRC-32. On any
    /// failure (client gone, disk full, the version already here) the temporary file is
    /// dropped: nothing partial is visible, and nothing already stored is touched.
    /// A version is written once: the rename into place never replaces a file, so a replayed
    /// ticket ends in `StorageError.versionExists` (409) here and on every replica.
    /// `checkingLengthOf`: the ticket whose announced length the body must have.
    func receiveValue(_ key: Key, version: UInt64, from body: MessageBody, forwardingTo forwards: [StreamingUpload] = [],
                      hashing digest: EVPDigest? = nil, expecting checksum: UInt32? = nil,
                      checkingLengthOf ticket: PlacementTicket? = nil) throws -> (Int, UInt32) {
        // A full disk (the journal had to give its reserve back): reads and deletes only,
        // until removals or the operator free enough room to hold the reserve again.
        guard journal.reserve.isHeld else {
            throw HTTPError(507, "volume disk is full: read-and-delete mode (GET and DELETE are served; "
                            + "writes resume once space is freed)", closesConnection: true)
        }
        let write = try store.beginWrite(key: key, version: version)
        // A small value is kept whole as it arrives: its bytes go into the journal, whose
        // one shared sync then stands for the file's and the directory's fsyncs.
        var kept: [UInt8]? = body.knownRemaining.map { $0 <= UncommittedJournal.loggedValueBytes } == true ? [] : nil
        do {
            try write.appendAll(reading: { try body.read(into: $0) },
                                forEachPiece: { piece in
                                    digest?.update(piece)
                                    forwards.forEach { $0.write(piece) }
                                    if kept != nil { kept!.append(contentsOf: piece) }
                                })
            try ticket?.checkReceived(write.valueBytes)
            if let checksum, checksum != write.checksum.value { throw StorageError.checksumMismatch }
            // Journal the version before syncing the file, so both syncs run at once.
            var logged: Int?
            if let kept, kept.count == write.valueBytes {
                logged = try journal.appendLogged(key, version: version, value: kept, crc: write.checksum.value)
            }
            if logged != nil { journaledCopies.increment() }
            let position = try logged ?? journal.append(key, version: version)
            defer { if let logged { journal.applied(logged) } }
            do {
                try write.finish(expecting: checksum, durably: logged == nil, beforeRename: { try journal.waitUntilDurable(position) })
            } catch StorageError.versionExists {
                // The entry stays: the copy in place is another upload's, whose own entry
                // this must not strike (the orphan sweep resolves both alike).
                throw StorageError.versionExists
            } catch {
                if logged != nil { journal.cancelLogged(key, version: version) }
                journal.strike(key, version: version)
                throw error
            }
        } catch {
            write.abort()
            throw error
        }
        return (write.valueBytes, write.checksum.value)
    }

    /// Drops a version that will never be committed, here and on the replicas that have it.
    private func discard(_ key: Key, version: UInt64, replicas: [String]) throws {
        try dropVersion(key, version)
        guard !replicas.isEmpty else { return }
        afterAnswer { [self] in
            notify(replicas, key: key, path: "/internal/replica", query: "exact=\(version)", method: "DELETE")
        }
    }

    func deleteValue(_ key: Key, ticket: PlacementTicket?) throws -> HTTPResponse {
        guard let ticket else {
            throw HTTPError(400, "a DELETE must go through the master (this request has no placement ticket)")
        }
        // The tombstone is committed first: once it is in the index no reader is sent to a
        // copy, so removing copies afterwards never exposes a half-deleted key. Holders that
        // cannot be reached now are in the master's removal queue.
        switch master.commitDelete(key, ticket) {
        case .accepted:
            // From here no reader is sent to any copy: remove them right after answering.
            // What fails here stays in the master's removal queue and is retried from there.
            // Reported only when done: otherwise the master's removal queue retries.
            if let me = ticket.holders.first {
                removals.enqueue(.init(key: key, below: ticket.version, master: master.masterURL(for: ticket), holder: me))
            }
            guard ticket.holders.count > 1 else { return HTTPResponse(status: 204) }
            afterAnswer { [self] in
                for holder in ticket.holders.dropFirst() {
                    guard let url = HTTPURL("\(holder)/internal/replica/\(key.pathComponent)?below=\(ticket.version)"),
                          (try? replicaClient.send("DELETE", url))?.status == 204 else { continue }
                    master.reportPurged(key, ticket, holder: holder)
                }
            }
            return HTTPResponse(status: 204)
        case .refused(let refusal):
            return refusal.answer("delete")
        case .unreachable(let reason):
            return .text(503, "delete not committed: \(reason)")
        }
    }

    /// Work that must happen but need not delay the client: cleanup of copies that are no
    /// longer visible, and outcome notices to replicas. Anything lost here (a crash) is
    /// caught by the journal's orphan sweep or the master's removal queue.
    func afterAnswer(_ work: @escaping @Sendable () -> Void) {
        housekeeping.async(execute: work)
    }

    /// How long a superseded version stays readable after its successor is committed.
    static let supersededGrace = 2.0

    /// Sends an outcome notice to each replica; a replica that misses it still learns the
    /// outcome from its journal (orphan sweep) or the master's removal queue.
    private func notify(_ replicas: [String], key: Key, path: String, query: String, method: String) {
        for replica in replicas {
            guard let url = HTTPURL("\(replica)\(path)/\(key.pathComponent)?\(query)") else { continue }
            _ = try? replicaClient.send(method, url)
        }
    }

    /// After `supersededGrace`, drops every version of the key older than `version` (the
    /// one the commit replaced, and any a crash or an outage left behind) and tells the
    /// master, which queued that removal with the commit. Only a report of all of them may
    /// clear the master's queue entry: dropping just the replaced version once leaked older
    /// ones on a volume that had been down.
    func scheduleSupersededDrop(_ key: Key, by version: UInt64) {
        removals.enqueue(.init(key: key, below: version, master: nil, holder: nil), after: Self.supersededGrace)
    }

    static func etag(_ version: UInt64) -> String { "\"\(version)\"" }
}
