import KalavaraHTTP
import KalavaraSupport
/// GET and HEAD on a volume: the value's bytes, checked against their checksum when they
/// are read into memory (small values) or straight from the page cache (sendfile), with
/// validators (`ETag`, `Last-Modified`) and single byte ranges.
extension Volume {
    func serveValue(_ key: Key, version: UInt64?, request: HTTPRequest) throws -> HTTPResponse {
        // A value small enough to be sent from memory is read with its file's header.
        let readAhead = request.isHead ? 0 : configuration.server.inlineFileBytes
        guard var value = try findValue(key, version: version, readingUpTo: readAhead) else {
            return version == nil ? .text(404, "no such key") : sendBack(key, "no longer holds that version")
        }
        let etag = Self.etag(value.version)
        var headers = HTTPHeaders()
        headers.add("ETag", etag)
        headers.add("Last-Modified", HTTPDate.format(value.modified))
        headers.add("Accept-Ranges", "bytes")

        if let condition = request.headers["If-None-Match"],
           condition.trimmingHTTPWhitespace() == "*" || request.headers.listValues("If-None-Match").contains(where: {
               $0 == etag || $0 == "W/" + etag
           }) {
            return HTTPResponse(status: 304, headers: headers)
        }

        // A value small enough to be sent from memory is read whole and checked first: a
        // bad byte is never served. Larger ones go by sendfile; the scrub checks them.
        var inMemory: [UInt8]?
        if !request.isHead, value.size <= configuration.server.inlineFileBytes {
            if let bytes = try store.readVerified(value) {
                inMemory = bytes
            } else {
                try leaveTheLoop()
                quarantine(value, reason: "failed its checksum on a read")
                guard version != nil, value.version < .max, let other = try findValue(key, version: value.version + 1, readingUpTo: readAhead),
                      let bytes = try store.readVerified(other) else {
                    return sendBack(key, "copy failed its checksum")
                }
                value = other
                inMemory = bytes
            }
        }

        headers.add("Content-Type", "application/octet-stream")
        // If-Range with another validator means the client's partial copy is stale: send all.
        let rangeApplies = request.headers["If-Range"].map { $0 == etag } ?? true
        if rangeApplies, let rangeHeader = request.headers["Range"] {
            switch ByteRange.parse(rangeHeader, size: value.size) {
            case .satisfiable(let range):
                headers.add("Content-Range", "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(value.size)")
                if let inMemory { return HTTPResponse(status: 206, headers: headers, body: .bytes(Array(inMemory[range]))) }
                return HTTPResponse(status: 206, headers: headers,
                                    body: .file(value.file, offset: value.valueOffset + range.lowerBound, count: range.count))
            case .unsatisfiable:
                var failure = HTTPResponse.text(416, "range not satisfiable")
                failure.headers.set("Content-Range", "bytes */\(value.size)")
                return failure
            case .ignored:
                break
            }
        }
        if let inMemory { return HTTPResponse(status: 200, headers: headers, body: .bytes(inMemory)) }
        return HTTPResponse(status: 200, headers: headers,
                            body: .file(value.file, offset: value.valueOffset, count: value.size))
    }

    /// The version to serve. Without a ticket (a client that came straight here): the
    /// newest version whose commit is not in doubt. With one for version V: V, or — if V
    /// is gone (overwritten and dropped, or moved by healing while the client was on its
    /// way) — the newest committed version above it, which became current meanwhile.
    private func findValue(_ key: Key, version: UInt64?, readingUpTo readAhead: Int) throws -> StoredValue? {
        if let version, let exact = try openChecked(key, version, readAhead) { return exact }
        let newer = store.versions(of: key).last { candidate in
            (version.map { candidate > $0 } ?? true) && !journal.isPending(key, version: candidate)
        }
        guard let newer else { return nil }
        return try openChecked(key, newer, readAhead)
    }

    /// Opens a version; a file whose header is damaged, or whose length is not the size its
    /// header records (cut or grown since it was written), goes to quarantine, is reported
    /// and counts as absent (the reader is sent elsewhere), rather than failing the read.
    /// The length is checked on every read, from the open's fstat, before a byte is sent: a
    /// large value goes out by sendfile, which never reads it here.
    private func openChecked(_ key: Key, _ version: UInt64, _ readAhead: Int) throws -> StoredValue? {
        do {
            guard let value = try store.open(key, version: version, readingUpTo: readAhead) else { return nil }
            guard !value.isWhole else { return value }
            try leaveTheLoop()
            quarantine(value, reason: "holds \(value.size) bytes where its header records \(value.declaredSize ?? 0)")
            return nil
        } catch StorageError.corrupt(let reason) {
            try leaveTheLoop()
            journalRemoval(key, version)
            guard (try? store.quarantine(fileNamed: FileStore.fileStem(key) + "." + String(version))) == true else { return nil }
            tookOutOfService(key, version, because: reason)
            return nil
        }
    }

    /// Taking a copy out of service syncs directories and calls the master: never on the
    /// event loop, where a read found it, but on a worker, which reads again.
    private func leaveTheLoop() throws {
        if EventLoop.onLoopThread { throw EventLoop.MustHandOff() }
    }

    /// A read for a version this volume does not (validly) hold: back to the master, which
    /// picks another holder (`not=` names this one), or `503` when the master is unknown.
    /// Never `404`: the master's index holds the key.
    private func sendBack(_ key: Key, _ reason: String) -> HTTPResponse {
        guard let (masterURL, me) = master.identity else {
            var answer = HTTPResponse.text(503, "this volume \(reason); ask the master again")
            answer.headers.set("Retry-After", "1")
            return answer
        }
        return .redirect(302, to: SendBack.location(master: masterURL, key: key, from: me))
    }

    /// Before a file of a journaled version leaves the data directory other than by
    /// `dropVersion` (quarantine): a removal record, so that no start-up puts it back.
    func journalRemoval(_ key: Key, _ version: UInt64) {
        guard journal.holdsValue(key, version: version) else { return }
        try? journal.removing([.init(key: key, version: version)]) { _ in }
    }

    /// Takes a bad copy out of service and tells the master, which drops this holder and
    /// has the key copied again from a good one.
    func quarantine(_ value: StoredValue, reason: String) {
        let key = value.key, version = value.version
        journalRemoval(key, version)
        do {
            guard try store.quarantine(key, version: version, checked: value) else { return }
        } catch {
            Log.error("cannot quarantine \(key) v\(version): \(error)")
            return
        }
        tookOutOfService(key, version, because: "\(key) v\(version) \(reason)")
    }

    /// After a copy moved to quarantine: no longer pending, counted, logged, and reported
    /// to the master (which drops this holder and has the key copied again).
    private func tookOutOfService(_ key: Key, _ version: UInt64, because reason: String) {
        journal.strike(key, version: version)
        scrubber.countCorrupt()
        Log.error("\(reason): moved to quarantine")
        afterAnswer { [self] in master.reportCorrupt(key, version: version) }
    }
}
