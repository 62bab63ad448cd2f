import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// Object operations: the bytes stream between the client and a volume through the gateway.
extension S3Gateway {
    /// GetObject and HeadObject. The index answers HEAD (size, ETag, metadata) without a
    /// volume; GET streams from the volume the master names, `Range` passed on.
    func getObject(_ context: S3Context) throws -> HTTPResponse {
        try context.checkVersionID()
        let key = try context.objectKey()
        try requireBucket(context.bucket)
        guard let entry = try cluster.locate(key) else { throw S3Error.noSuchKey(context.keyText) }
        let info = ObjectInfo(entry)
        if let notModified = try Self.evaluateConditions(context.request.headers, info) { return notModified }
        let isHead = context.request.isHead
        var headers = try Self.objectHeaders(info, overrides: context.query)

        if isHead, let size = info.size {
            var status = 200
            var length = Int(size)
            if let range = context.header("Range") {
                switch ByteRange.parse(range, size: Int(size)) {
                case .satisfiable(let bytes):
                    status = 206
                    length = bytes.count
                    headers.set("Content-Range", "bytes \(bytes.lowerBound)-\(bytes.upperBound - 1)/\(size)")
                case .unsatisfiable:
                    throw S3Error(416, "InvalidRange", "The requested range is not satisfiable")
                case .ignored:
                    break
                }
            }
            headers.set("Content-Length", String(length))
            return HTTPResponse(status: status, headers: headers)
        }
        var forward = HTTPHeaders()
        if let range = context.header("Range") { forward.add("Range", range) }
        let answer = try cluster.open(entry, headers: forward, method: isHead ? "HEAD" : "GET")
        switch answer.status {
        case 200, 206:
            break
        case 416:
            answer.close()
            throw S3Error(416, "InvalidRange", "The requested range is not satisfiable")
        case 404:
            answer.close()
            throw S3Error.noSuchKey(context.keyText)
        default:
            answer.close()
            throw S3Error.unavailable("the volume answered \(answer.status)")
        }
        if let range = answer.headers["Content-Range"] { headers.set("Content-Range", range) }
        let length = answer.headers["Content-Length"].flatMap(Int.init) ?? 0
        if isHead {
            answer.close()
            headers.set("Content-Length", String(length))
            return HTTPResponse(status: answer.status, headers: headers)
        }
        // The volume's bytes go from its socket to the client's by splice(2): the gateway
        // hop costs no copy through user space.
        let stream = answer.spliceSource().map { BodyStream(count: length, splicing: $0, finished: { answer.close() }) }
            ?? BodyStream(count: length, finished: { answer.close() }) { write in try answer.pump(write) }
        return HTTPResponse(status: answer.status, headers: headers, body: .stream(stream))
    }

    /// The headers of a GetObject/HeadObject answer; `response-*` query parameters (in
    /// presigned URLs) override the stored ones.
    static func objectHeaders(_ info: ObjectInfo, overrides query: QueryParameters) throws -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.add("ETag", info.etag)
        headers.add("Last-Modified", HTTPDate.format(info.lastModified))
        headers.add("Accept-Ranges", "bytes")
        var stored = info.attributes.headers
        if !stored.contains(where: { $0.name == "Content-Type" }) { stored.insert(("Content-Type", "binary/octet-stream"), at: 0) }
        for (name, value) in stored {
            headers.set(name, query["response-" + name.lowercased()] ?? value)
        }
        for name in ObjectAttributes.storedHeaders where headers[name] == nil {
            if let value = query["response-" + name.lowercased()] { headers.set(name, value) }
        }
        for name in ObjectAttributes.storedHeaders {
            if let value = query["response-" + name.lowercased()], !ObjectAttributes.isHeaderSafe(value) {
                throw S3Error.invalidArgument("response-\(name.lowercased()) cannot contain control characters")
            }
        }
        for (name, value) in info.attributes.metadata { headers.add("x-amz-meta-" + name, value) }
        if info.attributes.etag != nil, let parts = info.attributes.etag?.split(separator: "-").last {
            headers.add("x-amz-mp-parts-count", String(parts))
        }
        return headers
    }

    /// RFC 9110 §13.2.2's order, as S3 applies it: If-Match, If-Unmodified-Since,
    /// If-None-Match, If-Modified-Since. Throws 412; returns a 304 answer; nil: go on.
    static func evaluateConditions(_ headers: HTTPHeaders, _ info: ObjectInfo, prefix: String = "") throws -> HTTPResponse? {
        func matches(_ list: String) -> Bool { etag(info.etag, isIn: list) }
        let ifMatch = headers[prefix + "If-Match"]
        if let ifMatch, !matches(ifMatch) { throw S3Error.preconditionFailed }
        if ifMatch == nil, let text = headers[prefix + "If-Unmodified-Since"], let since = HTTPDate.parse(text),
           info.lastModified > since {
            throw S3Error.preconditionFailed
        }
        let ifNoneMatch = headers[prefix + "If-None-Match"]
        var notModified = false
        if let ifNoneMatch, matches(ifNoneMatch) { notModified = true }
        if ifNoneMatch == nil, let text = headers[prefix + "If-Modified-Since"], let since = HTTPDate.parse(text),
           info.lastModified <= since {
            notModified = true
        }
        guard notModified else { return nil }
        if !prefix.isEmpty { throw S3Error.preconditionFailed } // a copy's source conditions fail with 412
        var answer = HTTPResponse(status: 304)
        answer.headers.set("ETag", info.etag)
        answer.headers.set("Last-Modified", HTTPDate.format(info.lastModified))
        return answer
    }

    /// Whether a quoted ETag is in an `If-Match`-style list (`*` matches any).
    static func etag(_ etag: String, isIn list: String) -> Bool {
        list.split(separator: ",").contains {
            let tag = $0.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "W/", with: "")
            return tag == "*" || tag == etag || "\"\(tag)\"" == etag
        }
    }

    /// A conditional write (`If-Match`, `If-None-Match` on PutObject or
    /// CompleteMultipartUpload), checked against the current object just before the write:
    /// not atomic with it, so two conditional writers racing may both pass.
    func checkWriteConditions(_ context: S3Context, _ key: Key) throws {
        let ifMatch = context.header("If-Match"), ifNoneMatch = context.header("If-None-Match")
        guard ifMatch != nil || ifNoneMatch != nil else { return }
        let current = try cluster.locate(key).map(ObjectInfo.init)
        if let ifMatch {
            guard let current else { throw S3Error.noSuchKey(context.keyText) }
            guard Self.etag(current.etag, isIn: ifMatch) else { throw S3Error.preconditionFailed }
        }
        if let ifNoneMatch, let current, Self.etag(current.etag, isIn: ifNoneMatch) { throw S3Error.preconditionFailed }
    }

    func putObject(_ context: S3Context) throws -> HTTPResponse {
        let key = try context.objectKey()
        try requireBucket(context.bucket)
        let attributes = try ObjectAttributes(request: context.request.headers)
        try attributes.checkSize()
        let upload = try S3UploadBody(context.request, context.body, payload: context.identity.payload)
        try checkWriteConditions(context, key)
        let stored = try cluster.store(key, length: upload.length, attributes: attributes, md5: true,
                                       source: { try upload.read(into: $0) }, verify: { try upload.finish() })
        var response = HTTPResponse(status: 200)
        response.headers.set("ETag", ObjectInfo.etag(md5: stored.md5, attributes: ObjectAttributes(), version: stored.version))
        return response
    }

    func deleteObject(_ context: S3Context) throws -> HTTPResponse {
        try context.checkVersionID()
        let key = try context.objectKey()
        try requireBucket(context.bucket)
        try cluster.delete(key)
        return HTTPResponse(status: 204)
    }

    // MARK: Copy

    /// `x-amz-copy-source: /BUCKET/KEY[?versionId=null]`, URL-encoded.
    func copySource(_ context: S3Context) throws -> (bucket: String, key: [UInt8], entry: ClusterLink.Entry, info: ObjectInfo) {
        guard var text = context.header("x-amz-copy-source") else { throw S3Error.invalidArgument("missing x-amz-copy-source") }
        if let question = text.firstIndex(of: "?") {
            let query = try QueryParameters(text[text.index(after: question)...])
            if let version = query["versionId"], version != "null" { throw S3Error(404, "NoSuchVersion", "The specified version does not exist.") }
            text = String(text[..<question])
        }
        guard let decoded = PercentEncoding.decode(text.utf8) else { throw S3Error.invalidArgument("unreadable x-amz-copy-source") }
        var path = decoded[...]
        if path.first == UInt8(ascii: "/") { path = path.dropFirst() }
        guard let slash = path.firstIndex(of: UInt8(ascii: "/")), slash > path.startIndex else {
            throw S3Error.invalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
        }
        let bucket = String(decoding: path[path.startIndex..<slash], as: UTF8.self)
        let key = Array(path[(slash + 1)...])
        // A copy reads its source: the read right too, and a real bucket.
        guard context.identity.may(.read) else { throw S3Error.accessDenied }
        try requireBucket(bucket)
        guard let entry = try cluster.locate(try S3Context.indexKey(bucket: bucket, key: key)) else {
            throw S3Error.noSuchKey(String(decoding: key, as: UTF8.self))
        }
        let info = ObjectInfo(entry)
        _ = try Self.evaluateConditions(context.request.headers, info, prefix: "x-amz-copy-source-")
        return (bucket, key, entry, info)
    }

    /// Streams a stored value (or a range of it) into a new key, volume to gateway to volume.
    func copyValue(_ entry: ClusterLink.Entry, range: String?, to key: Key, attributes: ObjectAttributes,
                   keepAlive: () -> Void = {}) throws -> ClusterLink.Stored {
        var headers = HTTPHeaders()
        if let range { headers.add("Range", range) }
        let answer = try cluster.open(entry, headers: headers)
        defer { answer.close() }
        guard answer.status == 200 || answer.status == 206 else {
            if answer.status == 416 { throw S3Error(416, "InvalidRange", "The requested range is not satisfiable") }
            throw S3Error.unavailable("reading the copy source: the volume answered \(answer.status)")
        }
        if range != nil, answer.status != 206 { throw S3Error.invalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last") }
        let length = answer.headers["Content-Length"].flatMap(Int.init) ?? 0
        return try cluster.store(key, length: length, attributes: attributes, md5: true,
                                 source: { try answer.body.read(into: $0) }, verify: {}, between: keepAlive)
    }

    func copyObject(_ context: S3Context) throws -> HTTPResponse {
        let key = try context.objectKey()
        try requireBucket(context.bucket)
        let source = try copySource(context)
        let directive = context.header("x-amz-metadata-directive")?.uppercased() ?? "COPY"
        guard directive == "COPY" || directive == "REPLACE" else { throw S3Error.invalidArgument("Unknown metadata directive.") }
        if source.bucket == context.bucket, source.key == context.key, directive == "COPY" {
            throw S3Error(400, "InvalidRequest", "This copy request is illegal because it is trying to copy an object to itself without "
                          + "changing the object's metadata, storage class, website redirect location or encryption attributes.")
        }
        var attributes = directive == "REPLACE" ? try ObjectAttributes(request: context.request.headers) : source.info.attributes
        attributes.etag = nil // the copy is one part: its ETag is its MD5
        try attributes.checkSize()
        let stored = try copyValue(source.entry, range: nil, to: key, attributes: attributes)
        let etag = ObjectInfo.etag(md5: stored.md5, attributes: ObjectAttributes(), version: stored.version)
        return Self.xml { xml in
            xml.element("CopyObjectResult", namespace: true) { xml in
                xml.text("LastModified", ObjectInfo.iso8601(ObjectInfo.seconds(ofVersion: stored.version)))
                xml.text("ETag", etag)
            }
        }
    }
}
