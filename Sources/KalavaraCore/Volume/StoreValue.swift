import Foundation

/// PUT and DELETE on a volume: make the change durable here, then commit it to the master,
/// and answer success only once the master has recorded it.
extension Volume {
    /// Bytes moved per read/write while streaming a body to disk. Below glibc's mmap
    /// threshold, so each request's buffer is a cheap heap allocation.
    static let streamBufferBytes = 64 * 1024

    func storeValue(_ key: Key, ticket: PlacementTicket?, request: HTTPRequest, body: MessageBody) throws -> HTTPResponse {
        guard let ticket else {
            throw HTTPError(400, "a PUT must go through the master (this request has no placement ticket)")
        }
        guard master.masterURL(for: ticket) != nil else {
            throw HTTPError(400, "no master known to commit to: start the volume with -m")
        }
        // 1. Stream the body into a temporary file. Any failure (client gone, disk full)
        //    drops the temporary file: nothing partial is ever visible.
        let write = try store.beginWrite(key: key, version: ticket.version)
        do {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.streamBufferBytes, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let count = try body.read(into: buffer)
                if count == 0 { break }
                try write.append(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            }
            // 2. fsync, rename into place, fsync the directory.
            try write.finish()
        } catch {
            write.abort()
            throw error
        }

        // 3. Commit. Until the master records it, this version is invisible to readers
        //    going through the master, and the previous version stays on disk.
        switch master.commitWrite(key, ticket, size: write.valueBytes) {
        case .committed:
            try store.removeVersions(of: key) { $0 < ticket.version }
            var response = HTTPResponse.text(201, "stored")
            response.headers.set("ETag", Self.etag(ticket.version))
            return response
        case .refused(let status, let reason):
            try store.remove(key, version: ticket.version)
            return .text(status == 409 ? 409 : 502, "master refused the commit: \(reason)")
        case .unreachable(let reason):
            // The master may or may not have recorded it; the file stays so that a commit
            // that did land still has its value. The client must not count on it.
            Log.warning("commit of \(key) v\(ticket.version) failed: \(reason)")
            return .text(503, "value stored but not committed: \(reason)")
        }
    }

    func deleteValue(_ key: Key, ticket: PlacementTicket?) throws -> HTTPResponse {
        guard let ticket else {
            throw HTTPError(400, "a DELETE must go through the master (this request has no placement ticket)")
        }
        // The tombstone is committed first: once it is in the index no reader is sent to
        // a copy, so removing the copies afterwards can never expose a half-deleted key.
        switch master.commitDelete(key, ticket) {
        case .committed:
            try store.removeVersions(of: key) { $0 < ticket.version }
            if let me = ticket.holders.first { _ = master.reportPurged(key, ticket, holder: me) }
            return HTTPResponse(status: 204)
        case .refused(let status, let reason):
            return .text(status == 409 ? 409 : 502, "master refused the delete: \(reason)")
        case .unreachable(let reason):
            return .text(503, "delete not committed: \(reason)")
        }
    }

    static func etag(_ version: UInt64) -> String { "\"\(version)\"" }
}
