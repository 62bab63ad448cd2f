/// GET and HEAD on a volume: the value's bytes straight from the page cache (sendfile),
/// with validators (`ETag`, `Last-Modified`) and single byte ranges.
extension Volume {
    func serveValue(_ key: Key, version: UInt64?, request: HTTPRequest) throws -> HTTPResponse {
        // Without a version (a client that came straight here), the newest version whose
        // commit is not in doubt: a version still in the uncommitted journal may never be.
        let chosen = version ?? store.versions(of: key).last(where: { !journal.isPending(key, version: $0) })
        guard let chosen, let value = try store.open(key, version: chosen) else {
            return .text(404, version == nil ? "no such key" : "no such version of this key")
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

        headers.add("Content-Type", "application/octet-stream")
        // If-Range with another validator means the client's partial copy is stale: send all.
        let rangeApplies = request.headers["If-Range"].map { $0 == etag } ?? true
        if rangeApplies, let rangeHeader = request.headers["Range"] {
            switch ByteRange.parse(rangeHeader, size: value.size) {
            case .satisfiable(let range):
                headers.add("Content-Range", "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(value.size)")
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
        return HTTPResponse(status: 200, headers: headers,
                            body: .file(value.file, offset: value.valueOffset, count: value.size))
    }
}
