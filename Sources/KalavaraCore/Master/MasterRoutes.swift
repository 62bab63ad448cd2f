import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// Which handler answers which request on the master.
extension Master {
    /// Every route of the master, once. Index lookups are answered on the event loop;
    /// anything that writes, lists or reads a body runs on a worker. Each says who may call
    /// it (`access`); the gate enforces that before the handler runs.
    var router: Router {
        Router((routes + groupRoutes).map { inGroup(Self.standings[$0.route.name] ?? .any, $0) }, gate: gate)
    }

    /// In a master group, what each route needs (`Standing`; any master answers the rest):
    /// reads from a copy that holds every acknowledged write, changes and healing from the leader.
    static let standings: [String: Standing] = [
        "store-list": .current, "store-read": .current,
        "store-write": .leader, "add-volume": .leader, "remove-volume": .leader, "repair": .leader, "scrub": .leader,
        "rebuild": .leader, "commit": .leader, "purged": .leader, "resolve": .leader, "corrupt": .leader, "wanted": .leader,
    ]

    private var routes: [GuardedRoute] {
        [
            GuardedRoute("store-list", .exact("/store/"), methods: ["GET", "HEAD"], access: .client(.read)) { [unowned self] request, _ in
                try listKeys(request)
            },
            GuardedRoute("store-read", .prefix("/store/"), methods: ["GET", "HEAD"], on: .eventLoop, access: .client(.read)) { [unowned self] request, _ in
                try redirectRead(try Self.key(request), request.query)
            },
            // On the loop too: a redirect only reads the index and the clock (a PUT's small
            // body, already here, is dropped); a ceiling write or a body still on its way
            // sends it to a worker.
            GuardedRoute("store-write", .prefix("/store/"), methods: ["PUT", "DELETE"], on: .eventLoop, access: .client(.write)) { [unowned self] request, body in
                request.method == "PUT" ? try redirectWrite(try Self.key(request), request, body) : try redirectDelete(try Self.key(request))
            },
            GuardedRoute("health", .exact("/health"), methods: ["GET", "HEAD"], on: .eventLoop, access: .open) { _, _ in .text(200, "ok") },
            GuardedRoute("status-page", .exact("/"), methods: ["GET", "HEAD"], access: .client(.admin)) { [unowned self] _, _ in
                var page = HTTPResponse(status: 200, body: .bytes(Array(StatusPage.html(clusterStatus()).utf8)))
                page.headers.set("Content-Type", "text/html; charset=utf-8")
                page.headers.set("Cache-Control", "no-store")
                return page
            },
            GuardedRoute("status", .exact("/admin/status"), methods: ["GET", "HEAD"], access: .client(.admin)) { [unowned self] _, _ in
                try .json(200, clusterStatus())
            },
            GuardedRoute("metrics", .exact("/metrics"), methods: ["GET", "HEAD"], access: .open) { [unowned self] _, _ in
                .metrics(metrics)
            },
            GuardedRoute("add-volume", .exact("/admin/add-volume"), methods: ["POST"], access: .registration) { [unowned self] request, body in
                try addVolume(request, body)
            },
            GuardedRoute("volumes", .exact("/admin/volumes"), methods: ["GET", "HEAD"], access: .client(.admin)) { [unowned self] _, _ in
                try listVolumes()
            },
            GuardedRoute("remove-volume", .exact("/admin/remove-volume"), methods: ["POST"], access: .client(.admin)) { [unowned self] _, body in
                try removeVolume(body)
            },
            GuardedRoute("repair", .exact("/admin/repair"), methods: ["GET", "HEAD", "POST"], access: .client(.admin)) { [unowned self] request, _ in
                if request.method == "POST" {
                    reconciler.requestPass()
                    return .text(202, "repair pass requested")
                }
                return try .snakeCaseJSON(200, reconciler.snapshot)
            },
            GuardedRoute("scrub", .exact("/admin/scrub"), methods: ["POST"], access: .client(.admin)) { [unowned self] _, _ in
                startScrubs()
            },
            GuardedRoute("rebuild", .exact("/admin/rebuild"), methods: ["GET", "HEAD", "POST"], access: .client(.admin)) { [unowned self] request, _ in
                if request.method == "POST" {
                    return .text(202, try rebuilder.start() ? "index rebuild started" : "index rebuild already running")
                }
                return try .snakeCaseJSON(200, rebuilder.snapshot)
            },
            GuardedRoute("commit", .exact("/internal/commit"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] request, _ in
                try commit(QueryParameters(request.query)).response()
            },
            GuardedRoute("purged", .exact("/internal/purged"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] request, body in
                try purged(request, body)
            },
            GuardedRoute("resolve", .exact("/internal/resolve"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] request, _ in
                try resolve(QueryParameters(request.query))
            },
            GuardedRoute("corrupt", .exact("/internal/corrupt"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] request, _ in
                try corrupt(QueryParameters(request.query))
            },
            GuardedRoute("wanted", .exact("/internal/wanted"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] request, body in
                try wanted(request, body)
            },
        ]
    }

    private static func key(_ request: HTTPRequest) throws -> Key {
        try Key(percentEncoded: request.path.dropFirst("/store/".count))
    }

    // MARK: Store

    /// PUT: send the client to the first volume of the key's placement, with a ticket
    /// naming the new version and all the volumes. The index is not touched: it changes
    /// only when the volume commits.
    private func redirectWrite(_ key: Key, _ request: HTTPRequest, _ body: MessageBody) throws -> HTTPResponse {
        let (roomy, full) = registry.writable
        let replicas = configuration.replicas
        guard roomy.count + full.count >= replicas else {
            return .text(503, "only \(roomy.count + full.count) live volume(s), \(replicas) needed")
        }
        try checkIndexSpace(forRecordOf: key, attributes: request.headers[VolumeHeaders.attributes])
        // Volumes with a full disk are passed over while enough others remain; the
        // reconciler moves the key to its placement once they have room again. A volume
        // down is passed over too: the zone-aware ranking of the others takes a substitute
        // in a zone the key's other copies are not in, while there is one.
        var placement = Placement.placement(roomy, replicas: replicas, for: key)
        if placement.count < replicas { placement += Placement.placement(full, replicas: replicas - placement.count, for: key) }
        let requestID = RequestID.from(request.headers)
        let version = try issueVersion()
        var ticket = PlacementTicket(version: version, master: configuration.advertisedURL, holders: placement,
                                     requestID: requestID, length: announcedLength(request, body))
        if let secret = gate.secret {
            ticket.expires = UInt64(VersionClock.issueTime(of: version) + configuration.ticketLifetime)
            ticket = ticket.signed(for: .put, key, secret: secret)
        }
        Log.debug("PUT redirected", ["key": "\(key)", "ver": "\(ticket.version)", "volume": "\(placement[0])", "rid": "\(requestID)"])
        var response = Self.resend(.put, to: location(placement[0], key, ticket.query))
        response.headers.set(RequestID.header, requestID)
        return response
    }

    /// GET/HEAD: send the client to a live volume holding the current version, naming
    /// that version so the volume never serves an older or uncommitted one. A volume that
    /// no longer holds it sends the client back here with `not=` naming itself: another
    /// holder is chosen, or `503` says to retry.
    private func redirectRead(_ key: Key, _ query: Substring?) throws -> HTTPResponse {
        guard let record = try currentRecord(key), !record.isTombstone else {
            return isRebuilding ? Self.rebuildingAnswer : Self.noSuchKey
        }
        // `not=` is left out before suspect holders are: one that failed its last health
        // check may still serve the read when the answering one no longer holds it.
        let not = try SendBack.volume(inQuery: query)
        let holders = registry.liveURLs(among: record.holders, excluding: not)
        guard !holders.isEmpty else {
            return .text(503, "no live volume holds this key")
        }
        let holder = holders.count == 1
            ? holders[0] : holders[(readTurns.wrappingAdd(1, ordering: .relaxed).oldValue & Int.max) % holders.count]
        let query = readTickets?.query(key, version: record.version) ?? PlacementTicket(version: record.version).query
        var answer = HTTPResponse.redirect(302, to: location(holder, key, query))
        if record.md5 != nil || record.attributes != nil { Self.describe(record, in: &answer.headers) }
        return answer
    }

    /// The key's record as a reader may see it. A group's leader writes a commit to its index
    /// before its standbys confirm it, under the key's lock: a reader here waits for that lock,
    /// so it never sees a write the group has not acknowledged, which a read on a standby
    /// would then not see. A standby waits for its key's fence (`VisibilityFence`) for the
    /// same reason. (On the event loop, a busy key goes to a worker.)
    private func currentRecord(_ key: Key) throws -> IndexRecord? {
        guard let group else { return try index.record(for: key) }
        let deadline = monotonicSeconds() + group.fence.patience
        while true {
            let record: IndexRecord?
            if group.isLeader, let free = try keyLocks.ifFree(for: key, { try index.record(for: key) }) {
                record = free
            } else if group.isLeader {
                if EventLoop.onLoopThread { throw EventLoop.MustHandOff() }
                record = try keyLocks.withLock(for: key) { try index.record(for: key) }
            } else {
                record = try index.record(for: key)
            }
            // Read first, then looked at: a key is fenced before its write is applied. (A
            // new leader keeps its fence until no standby of its predecessor answers reads.)
            guard let fenced = group.fence.firstFenced(CollectionOfOne(key).lazy.map(Index.storageKey)) else { return record }
            try awaitRelease(of: fenced, in: group, until: deadline)
        }
    }

    /// Waits (on a worker) until `key` leaves `group`'s fence; `503` after its patience, or
    /// if this master may no longer answer reads when it does.
    private func awaitRelease(of key: [UInt8], in group: MasterGroup, until deadline: Double) throws {
        if EventLoop.onLoopThread { throw EventLoop.MustHandOff() }
        guard group.fence.waitForRelease(of: key, until: deadline) else { throw VisibilityFence.stillFenced(group.fence.patience) }
        guard group.servesReads else { throw VisibilityFence.stillFenced(group.fence.patience) }
    }

    /// A page of the index as a lister may see it: like `currentRecord`, it waits for any key
    /// it read whose write the group has not acknowledged (a delete's tombstone included), then
    /// reads the page again, until `deadline`.
    private func currentPage(prefix: [UInt8], after: [UInt8]?, limit: Int, stopAfter: (([UInt8]) -> Bool)?,
                             deadline: Double) throws -> [(Key, IndexRecord)] {
        while true {
            let page = try index.list(prefix: prefix, after: after, limit: limit, stopAfter: stopAfter)
            guard let group else { return page }
            if let fenced = group.fence.firstFenced(page.lazy.map { Index.storageKey($0.0) }) {
                try awaitRelease(of: fenced, in: group, until: deadline)
                continue
            }
            guard group.isLeader else { return page }
            let busy = page.filter { keyLocks.ifFree(for: $0.0, { true }) == nil }
            // Locks are striped: under a steady stream of writes some stripe is always
            // busy, so after its patience the leader gives the page it has.
            guard !busy.isEmpty, monotonicSeconds() < deadline else { return page }
            if EventLoop.onLoopThread { throw EventLoop.MustHandOff() }
            for (key, _) in busy { keyLocks.withLock(for: key) {} }
        }
    }

    /// What a writer asked the index to keep with a value (the S3 gateway's ETag and
    /// metadata), so a HEAD needs no volume.
    static func describe(_ record: IndexRecord, in headers: inout HTTPHeaders) {
        headers.set(VolumeHeaders.size, String(record.size))
        if let md5 = record.md5 { headers.set(VolumeHeaders.md5, Hex.encode(md5)) }
        if let attributes = record.attributes { headers.set(VolumeHeaders.attributes, String(decoding: attributes, as: UTF8.self)) }
    }

    /// DELETE: send the client to a live holder, with the delete's version and the holders.
    private func redirectDelete(_ key: Key) throws -> HTTPResponse {
        // Its 404 is a read too: it must not see a delete the group has not acknowledged.
        guard let record = try currentRecord(key), !record.isTombstone else {
            return isRebuilding ? Self.rebuildingAnswer : .text(404, "no such key")
        }
        // A delete writes too: a tombstone and its expiry entry, the size of a bare record.
        try checkIndexSpace(forRecordOf: key, attributes: nil)
        let live = liveHolders(record)
        guard let first = live.first else { return .text(503, "no live volume holds this key") }
        let all = record.holders.compactMap { registry.volume($0)?.url }
        let holders = live + all.filter { !live.contains($0) }
        let version = try issueVersion()
        var ticket = PlacementTicket(version: version, master: configuration.advertisedURL, holders: holders)
        if let secret = gate.secret {
            ticket.expires = UInt64(VersionClock.issueTime(of: version) + configuration.ticketLifetime)
            ticket = ticket.signed(for: .delete, key, secret: secret)
        }
        return Self.resend(.delete, to: location(first, key, ticket.query))
    }

    /// A write's `307`, with a one-line body saying what to do: a client that does not
    /// follow it by itself (Go's `http.Client` with a body it cannot rewind, HTTPie
    /// `--chunked`) would otherwise show an empty answer, and nothing is stored.
    private static func resend(_ operation: PlacementTicket.Operation, to location: String) -> HTTPResponse {
        var response = HTTPResponse.redirect(307, to: location)
        response.body = .bytes(operation == .put ? putHint : deleteHint)
        response.headers.set("Content-Type", "text/plain; charset=utf-8")
        return response
    }
    private static let putHint = Array("not stored yet: send this PUT again, with its body, to the Location (curl -L does)\n".utf8)
    private static let deleteHint = Array("not deleted yet: send this DELETE again to the Location (curl -L does)\n".utf8)

    /// Refuses a PUT or DELETE up front (507) when its index record, key and attributes counted, would
    /// not fit above the index's reserve, so no volume stores a value whose commit must fail.
    /// Reopening an index held off after a full disk blocks: a worker does it, not the loop.
    private func checkIndexSpace(forRecordOf key: Key, attributes: String?) throws {
        if index.writesHeldOff, EventLoop.onLoopThread { throw EventLoop.MustHandOff() }
        try index.checkSpace(forBytes: IndexRecord.overheadBytes + key.bytes.count + (attributes?.utf8.count ?? 0))
    }

    /// A version for a write's ticket. On the event loop, one that needs no ceiling write
    /// now, or the request goes to a worker, which may wait for it.
    private func issueVersion() throws -> UInt64 {
        if let version = clock.nextWithoutWaiting() { return version }
        if EventLoop.onLoopThread { throw EventLoop.MustHandOff() }
        return try clock.next()
    }

    /// The most common answer of all, built once.
    private static let noSuchKey = HTTPResponse.text(404, "no such key")
    private static let rebuildingAnswer: HTTPResponse = {
        var answer = HTTPResponse.text(503, "index rebuild in progress: this key is not found yet")
        answer.headers.set("Retry-After", "1")
        return answer
    }()

    private func liveHolders(_ record: IndexRecord) -> [String] {
        registry.liveURLs(among: record.holders)
    }

    private func location(_ volume: String, _ key: Key, _ query: String) -> String {
        "\(volume)/store/\(key.pathComponent)?\(query)"
    }

    /// `GET /store/?prefix=P&limit=N&after=K`: keys in byte order, a page at a time, at most
    /// `limit` entries and about `Listing.pageBytes` bytes, streamed to the client.
    private func listKeys(_ request: HTTPRequest) throws -> HTTPResponse {
        let parameters = try QueryParameters(request.query)
        var limit = 1000
        if let text = parameters["limit"] {
            guard let value = Int(text), value >= 1 else { throw HTTPError(400, "limit must be a positive number") }
            limit = min(value, 10_000)
        }
        let prefix = parameters.bytes("prefix") ?? []
        let delimiter = parameters.bytes("delimiter")
        let reserved = Listing.reservedBytes(limit: limit)
        guard listings.take(reserved, waiting: Listing.budgetWait) else {
            var busy = HTTPError(503, "too many listings in flight (--listing-memory): retry shortly")
            busy.headers["Retry-After"] = "1"
            throw busy
        }
        let page: Listing
        let deadline = monotonicSeconds() + (group?.fence.patience ?? 0)
        do {
            page = try Listing.page(prefix: prefix, delimiter: delimiter, after: parameters.bytes("after"), limit: limit,
                                    maxBytes: Listing.pageBytes) {
                try currentPage(prefix: prefix, after: $0, limit: $1, stopAfter: $2, deadline: deadline)
            }
        } catch {
            listings.give(reserved)
            throw error
        }
        return KeyPage.answer(page, prefixes: delimiter != nil, details: parameters["detail"] == "1",
                              chunked: request.minorVersion >= 1) { [listings] in
            listings.give(reserved)
        }
    }

    // MARK: Admin

    /// Whether the volume at `url` answers a health check (signed and verified in a signed
    /// cluster; over TLS its certificate verified).
    private func answersHealth(_ url: String) -> Bool {
        let client = HTTPClient(timeout: 2, maxIdlePerHost: 0, signer: gate.secret)
        return (try? HealthMonitor.ask(url, masterURL: configuration.advertisedURL, client: client, secret: gate.secret)) ?? nil != nil
    }

    /// `POST /admin/add-volume`: an operator's add (which also brings back a drained or
    /// removed volume) or a volume's heartbeat (header `Kalavara-Heartbeat`, which does not).
    private func addVolume(_ request: HTTPRequest, _ body: MessageBody) throws -> HTTPResponse {
        let bytes = try body.readAll(limit: 4096)
        let text = String(decoding: bytes, as: UTF8.self)
        let explicit = request.headers[VolumeHeaders.heartbeat] == nil
        let normalized = VolumeRegistry.normalize(text)
        if explicit, gate.secret != nil {
            // An operator's add in a signed cluster: the volume must prove it holds the
            // cluster secret, so the registry never grows from an unauthenticated URL.
            guard let url = normalized else {
                throw HTTPError(400, "not a volume base URL (want http://host:port or https://host:port): \(text.prefix(200))")
            }
            guard answersHealth(url) else {
                return .text(403, "volume \(url) did not prove it holds this cluster's secret "
                             + "(is it running, with the same --secret-file?)")
            }
        } else {
            try SignedCall.verifyBody(request, bytes, secret: gate.secret)
            // A new https volume must first present a certificate that verifies (the --tls-ca's,
            // for its URL's host): the registry never holds one the master could not call.
            if let url = normalized, HTTPURL(url)?.isSecure == true, !registry.all.contains(where: { $0.url == url }),
               !answersHealth(url) {
                return .text(403, "volume \(url) did not answer a health check over TLS (does --tls-ca sign its certificate?)")
            }
        }
        let (id, isNew) = try registry.add(text, explicit: explicit)
        let url = VolumeRegistry.normalize(text)!
        if isNew {
            server.trustPeer(url: url)
            Log.info("volume \(url) added")
            reconciler.requestPass()
        }
        if !explicit, registry.volume(id)?.mode == .removed {
            return .text(410, "volume \(url) was removed from this cluster; add it again with POST /admin/add-volume")
        }
        return .text(200, isNew ? "added \(url)" : "already known: \(url)")
    }

    /// `POST /admin/scrub`: a scrub pass starts on every live volume. A volume starts one
    /// only for the cluster's signature (a pass reads every file on its disk), so this is
    /// where an operator asks, with `admin` credentials; the call to each volume is signed.
    private func startScrubs() -> HTTPResponse {
        let volumes = registry.liveURLs
        let client = HTTPClient(timeout: 5, maxIdlePerHost: 0, signer: gate.secret)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: volumes.count) { index in
            let volume = volumes[index]
            let answer = HTTPURL(volume + "/admin/scrub").flatMap { try? client.send("POST", $0) }
            guard answer?.status != 202 else { return }
            let failure = "\(volume): " + (answer.map { "\($0.status) \($0.text.trimmingCharacters(in: .whitespacesAndNewlines))" }
                                           ?? "no answer")
            failures.withLock { $0.append(failure) }
        }
        let failed = failures.withLock { $0 }
        guard failed.isEmpty else { return .text(502, "scrub not started on " + failed.sorted().joined(separator: "; ")) }
        return .text(202, "scrub started on \(volumes.count) volume(s)")
    }

    /// `POST /admin/remove-volume`: drain a volume. Its keys move to their new placement;
    /// once no key needs it, it leaves the registry.
    private func removeVolume(_ body: MessageBody) throws -> HTTPResponse {
        let text = String(decoding: try body.readAll(limit: 4096), as: UTF8.self)
        guard let url = VolumeRegistry.normalize(text) else {
            throw HTTPError(400, "not a volume base URL (want http://host:port): \(text.prefix(200))")
        }
        guard let id = registry.id(of: url), let volume = registry.volume(id), volume.mode != .removed else {
            return .text(404, "no such volume: \(url)")
        }
        if volume.mode == .active {
            try registry.setMode(id, .draining)
            Log.info("volume \(url) draining: its keys move to their new placement")
            reconciler.requestPass()
        }
        return .text(202, "draining \(url)")
    }

    private func listVolumes() throws -> HTTPResponse {
        let now = monotonicSeconds()
        return try .snakeCaseJSON(200, VolumeList(volumes: registry.present.map {
            VolumeList.Entry(url: $0.url, state: $0.state(now: now, outAfter: registry.outAfter), live: $0.isLive, zone: $0.zone,
                             keys: $0.valueCount, freeBytes: $0.freeBytes, unknownFiles: $0.unknownFiles, diskFull: $0.isDiskFull)
        }))
    }
}

/// `GET /admin/volumes` answers.
struct VolumeList: Encodable {
    struct Entry: Encodable {
        let url: String
        let state: VolumeRegistry.State
        let live: Bool
        /// Its failure domain (`volume --zone`; `default` until it says otherwise).
        let zone: String
        /// Null while not known: the key count until the volume has counted its files, the
        /// free bytes until it has reported them, the unknown files until a scrub pass asked.
        @NullWhenAbsent var keys: Int?
        @NullWhenAbsent var freeBytes: Int?
        @NullWhenAbsent var unknownFiles: Int?
        /// Its disk is full: it serves reads and deletes and refuses new values (`507`).
        let diskFull: Bool
    }

    let volumes: [Entry]
}

extension Master {
    /// The body length a PUT's ticket names, so that a client following the redirect
    /// without resending its body (a spent generator) is refused by the volume instead of
    /// storing an empty value: the `Content-Length` announced here, or for a chunked body
    /// whether its first chunk is empty (waiting a moment for the first chunk line when the
    /// client sends without `Expect: 100-continue`; the master still reads nothing more).
    /// An empty body names nothing: a client may send its body only to the volume.
    func announcedLength(_ request: HTTPRequest, _ body: MessageBody) -> Int? {
        switch request.framing {
        case .none, .length(0): return nil
        case .length(let count): return count
        case .chunked, .untilClose:
            return body.peekChunkedIsEmpty(waiting: 0.2) == false ? -1 : nil
        }
    }
}
