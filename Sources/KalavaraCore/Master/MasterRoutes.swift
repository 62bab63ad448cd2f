import Foundation

/// Which handler answers which request on the master.
extension Master {
    func route(_ request: HTTPRequest, _ body: MessageBody) throws -> HTTPResponse {
        let path = request.path
        if path.hasPrefix("/store/") {
            let keyText = path.dropFirst("/store/".count)
            if keyText.isEmpty, request.method == "GET" || request.method == "HEAD" {
                return try listKeys(request)
            }
            return try storeRoute(request, key: try Key(percentEncoded: keyText))
        }
        switch path {
        case "/health":
            try require(request, ["GET", "HEAD"])
            return .text(200, "ok")
        case "/metrics":
            try require(request, ["GET", "HEAD"])
            var response = HTTPResponse.text(200, metrics.render())
            response.headers.set("Content-Type", "text/plain; version=0.0.4")
            return response
        case "/admin/add-volume":
            try require(request, ["POST"])
            return try addVolume(body)
        case "/admin/volumes":
            try require(request, ["GET", "HEAD"])
            return listVolumes()
        case "/internal/commit":
            try require(request, ["POST"])
            return try commit(QueryParameters(request.query))
        case "/internal/purged":
            try require(request, ["POST"])
            return try purged(QueryParameters(request.query))
        case "/internal/resolve":
            try require(request, ["POST"])
            return try resolve(QueryParameters(request.query))
        default:
            return .text(404, "no such endpoint")
        }
    }

    /// The requests answered on the event loop: lookups that read the index and nothing
    /// else. Returns nil for everything that may block (writes, listings, admin).
    func quickRoute(_ request: HTTPRequest) -> HTTPResponse? {
        guard request.method == "GET" || request.method == "HEAD" else { return nil }
        let path = request.path
        do {
            if path.hasPrefix("/store/"), path.count > "/store/".count {
                return try redirectRead(try Key(percentEncoded: path.dropFirst("/store/".count)))
            }
            if path == "/health" { return .text(200, "ok") }
            return nil
        } catch let error as HTTPError {
            return .error(error)
        } catch {
            return nil // an index error: let the worker path report it
        }
    }

    private func storeRoute(_ request: HTTPRequest, key: Key) throws -> HTTPResponse {
        switch request.method {
        case "PUT": return try redirectWrite(key)
        case "GET", "HEAD": return try redirectRead(key)
        case "DELETE": return try redirectDelete(key)
        default: throw HTTPError.methodNotAllowed(["GET", "HEAD", "PUT", "DELETE"])
        }
    }

    // MARK: Store

    /// PUT: send the client to the first volume of the key's placement, with a ticket
    /// naming the new version and all the volumes. The index is not touched: it changes
    /// only when the volume commits.
    private func redirectWrite(_ key: Key) throws -> HTTPResponse {
        let live = registry.liveURLs
        guard live.count >= configuration.replicas else {
            return .text(503, "only \(live.count) live volume(s), \(configuration.replicas) needed")
        }
        let placement = Array(Placement.order(live, for: key).prefix(configuration.replicas))
        let ticket = PlacementTicket(version: try clock.next(), master: configuration.advertisedURL, holders: placement)
        return .redirect(307, to: location(placement[0], key, ticket.query))
    }

    /// GET/HEAD: send the client to a live volume holding the current version, naming
    /// that version so the volume never serves an older or uncommitted one.
    private func redirectRead(_ key: Key) throws -> HTTPResponse {
        guard let record = try index.record(for: key), !record.isTombstone else {
            return Self.noSuchKey
        }
        guard let holder = liveHolders(record).first else {
            return .text(503, "no live volume holds this key")
        }
        return .redirect(302, to: location(holder, key, PlacementTicket(version: record.version).query))
    }

    /// DELETE: send the client to a live holder, with the delete's version and the holders.
    private func redirectDelete(_ key: Key) throws -> HTTPResponse {
        guard let record = try index.record(for: key), !record.isTombstone else {
            return .text(404, "no such key")
        }
        let live = liveHolders(record)
        guard let first = live.first else { return .text(503, "no live volume holds this key") }
        let all = record.holders.compactMap { registry.volume($0)?.url }
        let holders = live + all.filter { !live.contains($0) }
        let ticket = PlacementTicket(version: try clock.next(), master: configuration.advertisedURL, holders: holders)
        return .redirect(307, to: location(first, key, ticket.query))
    }

    /// The most common answer of all, built once.
    private static let noSuchKey = HTTPResponse.text(404, "no such key")

    private func liveHolders(_ record: IndexRecord) -> [String] {
        registry.liveURLs(among: record.holders)
    }

    private func location(_ volume: String, _ key: Key, _ query: String) -> String {
        "\(volume)/store/\(key.pathComponent)?\(query)"
    }

    /// `GET /store/?prefix=P&limit=N&after=K`: keys in byte order, a page at a time.
    private func listKeys(_ request: HTTPRequest) throws -> HTTPResponse {
        let parameters = try QueryParameters(request.query)
        var limit = 1000
        if let text = parameters["limit"] {
            guard let value = Int(text), value >= 1 else { throw HTTPError(400, "limit must be a positive number") }
            limit = min(value, 10_000)
        }
        let prefix = parameters.bytes("prefix") ?? []
        let after = parameters.bytes("after")
        var keys: [Key] = []
        var cursor = after
        // Tombstones are skipped, so a page may need several scans to fill.
        while keys.count < limit {
            let wanted = limit - keys.count
            let batch = try index.list(prefix: prefix, after: cursor, limit: wanted)
            for (key, record) in batch where !record.isTombstone { keys.append(key) }
            guard batch.count == wanted, let last = batch.last else { break }
            cursor = last.0.bytes
        }
        let next = keys.count == limit ? keys.last.map { JSON.string($0.description) } ?? "null" : "null"
        let list = keys.map { JSON.string($0.description) }.joined(separator: ",")
        return .json(200, "{\"keys\":[\(list)],\"next\":\(next)}\n")
    }

    // MARK: Admin

    private func addVolume(_ body: MessageBody) throws -> HTTPResponse {
        let text = String(decoding: try body.readAll(limit: 4096), as: UTF8.self)
        let (_, isNew) = try registry.add(text)
        let url = VolumeRegistry.normalize(text)!
        if isNew { Log.info("volume \(url) added") }
        return .text(200, isNew ? "added \(url)" : "already known: \(url)")
    }

    private func listVolumes() -> HTTPResponse {
        let entries = registry.all.map { volume in
            "{\"url\":\(JSON.string(volume.url)),\"live\":\(volume.isLive),"
                + "\"keys\":\(volume.valueCount.map(String.init) ?? "null"),"
                + "\"free_bytes\":\(volume.freeBytes.map(String.init) ?? "null")}"
        }
        return .json(200, "{\"volumes\":[\(entries.joined(separator: ","))]}\n")
    }

    // MARK: Helpers

    func require(_ request: HTTPRequest, _ methods: [String]) throws {
        guard methods.contains(request.method) else { throw HTTPError.methodNotAllowed(methods) }
    }
}
