import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// The gateway's side of the cluster, as any client sees it: the master's redirects and
/// listings, the volumes' values. Bytes stream between the caller and a volume; nothing
/// passes through the master, and nothing is held whole in memory.
final class ClusterLink: Sendable {
    /// The masters (`-m`, any of a group's): calls go to the leader, reads to any.
    let masters: MasterDirectory
    /// Small calls (redirects, listings, deletes): kept-alive connections.
    let client: HTTPClient
    /// Value streams to and from volumes: fresh connections, a client-sized timeout.
    let streams: HTTPClient

    /// How long a call keeps trying other masters of a group: past a failover.
    static let patience = 15.0

    init(masters: [String], secret: ClusterSecret?) {
        self.masters = MasterDirectory(masters)
        client = HTTPClient(timeout: 10, maxIdlePerHost: 64, signer: secret)
        streams = HTTPClient(timeout: 30, maxIdlePerHost: 0, signer: secret)
    }

    /// What the master's index says of a key.
    struct Entry {
        let location: HTTPURL
        let version: UInt64
        /// Known when the writer kept attributes or an MD5 (everything the gateway writes).
        let size: UInt64?
        let md5: [UInt8]?
        let attributes: ObjectAttributes
    }

    private func storeTarget(_ key: Key, _ query: String = "") -> String {
        "/store/\(key.pathComponent)\(query)"
    }

    /// A call to the masters (the leader of a group, another while it fails over).
    private func call(_ method: String, _ target: String, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) throws -> ClientResponse {
        do {
            return try masters.send(client, method, target, headers: headers, body: body, patience: masters.isGroup ? Self.patience : 0)
        } catch {
            throw S3Error.unavailable("the cluster's masters (\(masters.known.joined(separator: ","))) did not answer: \(error)")
        }
    }

    /// A call to the master a volume sent the reader back to.
    private func call(_ method: String, _ url: HTTPURL) throws -> ClientResponse {
        do {
            return try client.send(method, url)
        } catch {
            throw S3Error.unavailable("the cluster at \(url.authority) did not answer: \(error)")
        }
    }

    static func unexpected(_ response: ClientResponse, _ what: String) -> S3Error {
        let reason = response.text.trimmingCharacters(in: .whitespacesAndNewlines).prefix(200)
        switch response.status {
        case 503: return S3Error(503, "SlowDown", "\(what): \(reason)")
        case 507: return S3Error(507, "InsufficientStorage", "\(what): a volume's disk is full")
        case 401, 403: return S3Error(500, "InternalError", "\(what): the cluster refused the gateway (\(response.status) \(reason)): check --secret-file")
        default: return S3Error(500, "InternalError", "\(what): \(response.status) \(reason)")
        }
    }

    /// The key's current value, or nil when the index has none.
    func locate(_ key: Key) throws -> Entry? {
        let response = try call("GET", storeTarget(key))
        switch response.status {
        case 302:
            guard let text = response.headers["Location"], let location = HTTPURL(text) else {
                throw S3Error.internalError("the master's redirect has no usable Location")
            }
            let version = PlacementTicket(redirectedTo: location)?.version ?? 0
            return Entry(location: location, version: version, size: response.headers[VolumeHeaders.size].flatMap(UInt64.init),
                         md5: response.headers[VolumeHeaders.md5].flatMap(Hex.decode),
                         attributes: ObjectAttributes(encoded: response.headers[VolumeHeaders.attributes]))
        case 404:
            return nil
        default:
            throw Self.unexpected(response, "lookup")
        }
    }

    /// Opens the value for reading (`Range` and other headers passed on). A volume that no
    /// longer holds the version sends us back to the master, which picks another holder.
    func open(_ entry: Entry, headers: HTTPHeaders = HTTPHeaders(), method: String = "GET") throws -> OpenAnswer {
        var url = entry.location
        for _ in 0..<4 {
            let answer: OpenAnswer
            do {
                answer = try streams.open(method, url, headers: headers)
            } catch {
                throw S3Error.unavailable("volume \(url.authority) did not answer: \(error)")
            }
            guard answer.status == 302 || answer.status == 307, let next = answer.headers["Location"].flatMap(HTTPURL.init) else {
                return answer
            }
            answer.close()
            if next.authority != url.authority, SendBack.volume(in: next) != nil {
                // Back to the master: its answer is another redirect to a volume.
                let response = try call("GET", next)
                guard response.status == 302, let again = response.headers["Location"].flatMap(HTTPURL.init) else {
                    throw Self.unexpected(response, "read")
                }
                url = again
            } else {
                url = next
            }
        }
        throw S3Error.unavailable("too many redirects reading \(entry.location.authority)")
    }

    struct Stored {
        let version: UInt64
        let md5: [UInt8]?
    }

    /// Stores the bytes `source` gives (until it gives 0) under `key` through the commit
    /// protocol: the master's redirect, then the body streamed to the first volume of the
    /// placement, with `Content-Length` when `length` is known, chunked otherwise. The last
    /// piece read is always held back until the next one arrives, and the final one until
    /// `verify` passes: a body that fails a check (a signature, a checksum, a short count) is
    /// cut short, so the volume drops it and commits nothing.
    func store(_ key: Key, length: Int?, attributes: ObjectAttributes?, md5: Bool,
               source: (UnsafeMutableRawBufferPointer) throws -> Int, verify: () throws -> Void,
               between: () -> Void = {}) throws -> Stored {
        let redirect = try call("PUT", storeTarget(key))
        guard redirect.status == 307, let text = redirect.headers["Location"], let location = HTTPURL(text) else {
            throw Self.unexpected(redirect, "store")
        }
        var headers = HTTPHeaders()
        if let attributes, !attributes.isEmpty { headers.add(VolumeHeaders.attributes, attributes.encoded) }
        if md5 { headers.add(VolumeHeaders.digest, "md5") }
        // An empty body is complete the moment its head is sent: check it before that.
        if length == 0 { try verify() }
        let upload: StreamingUpload
        do {
            upload = try streams.startUpload("PUT", location, headers: headers, contentLength: length)
        } catch {
            throw S3Error.unavailable("volume \(location.authority) did not answer: \(error)")
        }
        let pieceSize = 256 * 1024
        var held = UnsafeMutableRawBufferPointer.allocate(byteCount: pieceSize, alignment: 16)
        var next = UnsafeMutableRawBufferPointer.allocate(byteCount: pieceSize, alignment: 16)
        defer {
            held.deallocate()
            next.deallocate()
        }
        var heldCount = 0, total = 0
        do {
            while true {
                let want = length.map { min(pieceSize, $0 - total) } ?? pieceSize
                let count = want > 0 ? try source(UnsafeMutableRawBufferPointer(rebasing: next[0..<want])) : 0
                if count == 0 { break }
                total += count
                if heldCount > 0 { upload.write(UnsafeRawBufferPointer(rebasing: held[0..<heldCount])) }
                swap(&held, &next)
                heldCount = count
                if upload.failed { break }
                between()
            }
            if let length, total != length, !upload.failed {
                throw S3Error(400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header")
            }
            if length != 0 { try verify() }
            if heldCount > 0 { upload.write(UnsafeRawBufferPointer(rebasing: held[0..<heldCount])) }
        } catch {
            upload.abandon()
            throw error
        }
        let answer: ClientResponse
        do {
            answer = try upload.finish()
        } catch {
            throw S3Error.unavailable("volume \(location.authority) failed during the upload: \(error)")
        }
        let version = PlacementTicket(redirectedTo: location)?.version ?? 0
        let digest = answer.headers[VolumeHeaders.md5].flatMap(Hex.decode)
        if answer.status == 201 { return Stored(version: version, md5: digest) }
        switch CommitOutcome(answer) {
        case .superseded?:
            // A newer write of the key committed first: as in S3, where the last writer wins
            // and every writer hears success, this one is as if overwritten at once.
            return Stored(version: version, md5: digest)
        default:
            throw Self.unexpected(answer, "store")
        }
    }

    /// Deletes a key through the master's redirect; false when it was not there.
    @discardableResult
    func delete(_ key: Key) throws -> Bool {
        let redirect = try call("DELETE", storeTarget(key))
        if redirect.status == 404 { return false }
        guard redirect.status == 307, let location = redirect.headers["Location"].flatMap(HTTPURL.init) else {
            throw Self.unexpected(redirect, "delete")
        }
        let answer: ClientResponse
        do {
            answer = try streams.send("DELETE", location)
        } catch {
            throw S3Error.unavailable("volume \(location.authority) did not answer: \(error)")
        }
        if answer.status == 404 { return false }
        guard answer.status == 204 else { throw Self.unexpected(answer, "delete") }
        return true
    }

    /// Reads a small value whole (upload records).
    func read(_ key: Key, limit: Int = 1 << 20) throws -> [UInt8]? {
        guard let entry = try locate(key) else { return nil }
        let answer = try open(entry)
        defer { answer.close() }
        guard answer.status == 200 else {
            if answer.status == 404 { return nil }
            throw S3Error.unavailable("reading \(key): volume answered \(answer.status)")
        }
        do {
            return try answer.body.readAll(limit: limit)
        } catch {
            throw S3Error.unavailable("reading \(key): \(error)")
        }
    }

    /// Stores a small value whole.
    func write(_ key: Key, _ bytes: [UInt8], attributes: ObjectAttributes? = nil) throws {
        var offset = 0
        _ = try store(key, length: bytes.count, attributes: attributes, md5: false, source: { buffer in
            let count = min(buffer.count, bytes.count - offset)
            bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: count) }
            offset += count
            return count
        }, verify: {})
    }

    /// A page of the master's listing (`detail=1`).
    struct Page: Decodable {
        struct Detail: Decodable {
            let size: UInt64
            let version: UInt64
            let md5: String?
            let attributes: String?
        }
        let keys: [String]
        let prefixes: [String]?
        let next: String?
        let details: [Detail]?
    }

    func list(prefix: [UInt8], delimiter: [UInt8]? = nil, after: [UInt8]? = nil, limit: Int) throws -> Page {
        var query = QueryParameters()
        query.add("prefix", bytes: prefix)
        if let delimiter, !delimiter.isEmpty { query.add("delimiter", bytes: delimiter) }
        if let after { query.add("after", bytes: after) }
        query.add("limit", String(max(1, min(limit, 10_000))))
        query.add("detail", "1")
        let response = try call("GET", "/store/?\(query.encoded)")
        guard response.status == 200 else { throw Self.unexpected(response, "list") }
        do {
            return try JSONDecoder().decode(Page.self, from: Data(response.body))
        } catch {
            throw S3Error.internalError("unreadable listing from the master: \(error)")
        }
    }

    /// Every key under `prefix` (bounded: at most `limit`).
    func listAll(prefix: [UInt8], limit: Int = 100_000) throws -> [(key: [UInt8], detail: Page.Detail?)] {
        var result: [(key: [UInt8], detail: Page.Detail?)] = []
        var after: [UInt8]?
        while result.count < limit {
            let page = try list(prefix: prefix, after: after, limit: 1000)
            for (index, key) in page.keys.enumerated() { result.append((Array(key.utf8), page.details?[index])) }
            guard let next = page.next else { break }
            after = Array(next.utf8)
        }
        return result
    }
}
