/// GET and HEAD on a volume: the value's bytes straight from the page cache (sendfile),
/// with validators (`ETag`, `Last-Modified`) and single byte ranges.
extension Volume {
    func serveValue(_ key: Key, version: UInt64?, request: HTTPRequest) throws -> HTTPResponse {
        guard let value = try store.open(key, version: version) else {
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

/// A `Range: bytes=...` request header (RFC 9110 §14.2), single ranges only.
public enum ByteRange: Equatable {
    case satisfiable(Range<Int>)
    case unsatisfiable
    /// Not a single byte range we understand (multiple ranges, other units, bad syntax):
    /// RFC 9110 lets a server ignore it and send the whole value.
    case ignored

    public static func parse(_ header: String, size: Int) -> ByteRange {
        let text = header.trimmingHTTPWhitespace()
        guard text.hasPrefix("bytes="), !text.contains(",") else { return .ignored }
        let spec = text.dropFirst("bytes=".count)
        guard let dash = spec.firstIndex(of: "-") else { return .ignored }
        let first = spec[..<dash], last = spec[spec.index(after: dash)...]
        func number(_ digits: Substring) -> Int? {
            guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return Int(digits)
        }
        if first.isEmpty { // suffix: the last N bytes
            guard let count = number(last) else { return .ignored }
            guard count > 0, size > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, size - count)..<size)
        }
        guard let start = number(first) else { return .ignored }
        let end: Int
        if last.isEmpty {
            end = size - 1
        } else {
            guard let value = number(last), value >= start else { return .ignored }
            end = min(value, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .satisfiable(start..<(end + 1))
    }
}
