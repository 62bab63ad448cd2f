import KalavaraCore
import KalavaraHTTP
/// One S3 request, parsed: its bucket and key from the path (path-style addressing), its
/// query, and who sent it.
struct S3Context {
    let request: HTTPRequest
    let body: MessageBody
    let query: QueryParameters
    /// Empty for the service (`GET /`).
    let bucket: String
    /// The object's key, raw bytes; empty for a bucket request.
    let key: [UInt8]
    let identity: S3Authenticator.Identity
    let requestID: String

    enum Level { case service, bucket, object }
    var level: Level { bucket.isEmpty ? .service : key.isEmpty ? .bucket : .object }

    init(_ request: HTTPRequest, _ body: MessageBody, authenticator: S3Authenticator, requestID: String) throws {
        self.request = request
        self.body = body
        self.requestID = requestID
        query = try QueryParameters(request.query)
        guard let path = PercentEncoding.decode(request.path.utf8) else { throw S3Error.unparsableURI }
        var rest = path.dropFirst() // "/"
        if let slash = rest.firstIndex(of: UInt8(ascii: "/")) {
            bucket = String(decoding: rest[rest.startIndex..<slash], as: UTF8.self)
            rest = rest[(slash + 1)...]
            key = Array(rest)
            // S3 names objects in UTF-8: a key that is not (decoding would repair it into
            // other bytes) cannot name an object, so it is no "missing key" either.
            guard String(decoding: key, as: UTF8.self).utf8.elementsEqual(key) else { throw S3Error.unparsableURI }
        } else {
            bucket = String(decoding: rest, as: UTF8.self)
            key = []
        }
        identity = try authenticator.authenticate(request, query: query)
    }

    func has(_ parameter: String) -> Bool { query.bytes(parameter) != nil }
    func header(_ name: String) -> String? { request.headers[name] }

    /// The object's key in the master's index: `BUCKET/KEY`.
    func objectKey() throws -> Key {
        try Self.indexKey(bucket: bucket, key: key)
    }

    static func indexKey(bucket: String, key: [UInt8]) throws -> Key {
        guard !key.isEmpty else { throw S3Error(400, "InvalidArgument", "an object key cannot be empty") }
        let bytes = Array(bucket.utf8) + [UInt8(ascii: "/")] + key
        guard bytes.count <= Key.maxBytes else {
            throw S3Error(400, "KeyTooLongError", "Your key is too long: bucket name, '/' and key may be \(Key.maxBytes) bytes together.")
        }
        guard !key.contains(0) else { throw S3Error(400, "InvalidArgument", "an object key cannot contain a NUL byte") }
        return try Key(bytes)
    }

    var keyText: String { String(decoding: key, as: UTF8.self) }

    /// S3's rules for names of new buckets: 3 to 63 of `a-z 0-9 . -`, starting and ending
    /// with a letter or digit, no `..`, not an IP address.
    static func isValidBucketName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        func alnum(_ byte: UInt8) -> Bool { (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte) }
        guard (3...63).contains(bytes.count), bytes.allSatisfy({ alnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }) else {
            return false
        }
        guard alnum(bytes.first!), alnum(bytes.last!), !name.contains(".."), !name.contains(".-"), !name.contains("-.") else { return false }
        let parts = name.split(separator: ".")
        return !(parts.count == 4 && parts.allSatisfy { UInt8($0) != nil })
    }

    /// Whether a bucket of this name could exist (cheap check before asking the master).
    static func isPlausibleBucket(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 63 && name.utf8.allSatisfy {
            (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
                || (0x41...0x5A).contains($0) || $0 == UInt8(ascii: "_")
        }
    }

    /// `versionId` is accepted only as `null` (no versioning: the current version).
    func checkVersionID() throws {
        if let version = query["versionId"], version != "null" {
            throw S3Error(400, "InvalidArgument", "Invalid version id specified (this gateway keeps no versions)")
        }
    }
}

/// The S3 operations, in one table: which method, level and query sub-resource select each,
/// the right it needs, and the gateway method that answers it. The first match wins, so
/// entries with a sub-resource come before the plain one of the same method.
struct S3Operation {
    let name: String
    let method: String
    let level: S3Context.Level
    /// A query parameter the request must have (`uploads`, `uploadId`, `delete`...).
    let subresource: String?
    /// A header the request must have (`x-amz-copy-source`).
    let header: String?
    let right: Right
    let run: (S3Gateway, S3Context) throws -> HTTPResponse

    init(_ name: String, _ method: String, _ level: S3Context.Level, query subresource: String? = nil, header: String? = nil,
         _ right: Right, _ run: @escaping (S3Gateway, S3Context) throws -> HTTPResponse) {
        self.name = name
        self.method = method
        self.level = level
        self.subresource = subresource
        self.header = header
        self.right = right
        self.run = run
    }

    func matches(_ context: S3Context) -> Bool {
        let method = context.request.method
        guard self.method == method, level == context.level else { return false }
        if let subresource, !context.has(subresource) { return false }
        if let header, context.header(header) == nil { return false }
        return true
    }

    /// Sub-resources of features this gateway does not have: `501 NotImplemented`, never
    /// mistaken for a plain GET or PUT of the bucket or object.
    static let unsupported = ["policy", "lifecycle", "cors", "website", "tagging", "encryption", "object-lock", "retention",
                              "legal-hold", "replication", "logging", "notification", "requestPayment", "accelerate",
                              "analytics", "inventory", "metrics", "intelligent-tiering", "ownershipControls",
                              "publicAccessBlock", "restore", "select", "torrent", "attributes", "policyStatus"]

    nonisolated(unsafe) static let table: [S3Operation] = unsupported.flatMap { name in
        [S3Operation("unsupported", "GET", .bucket, query: name, .read) { _, _ in throw notImplemented(name) },
         S3Operation("unsupported", "PUT", .bucket, query: name, .write) { _, _ in throw notImplemented(name) },
         S3Operation("unsupported", "DELETE", .bucket, query: name, .write) { _, _ in throw notImplemented(name) },
         S3Operation("unsupported", "GET", .object, query: name, .read) { _, _ in throw notImplemented(name) },
         S3Operation("unsupported", "PUT", .object, query: name, .write) { _, _ in throw notImplemented(name) },
         S3Operation("unsupported", "POST", .object, query: name, .write) { _, _ in throw notImplemented(name) },
         S3Operation("unsupported", "DELETE", .object, query: name, .write) { _, _ in throw notImplemented(name) }]
    } + [
        S3Operation("ListBuckets", "GET", .service, .read) { try $0.listBuckets($1) },
        S3Operation("GetBucketAcl", "GET", .bucket, query: "acl", .read) { try $0.getACL($1) },
        S3Operation("PutBucketAcl", "PUT", .bucket, query: "acl", .write) { try $0.putACL($1) },
        S3Operation("GetBucketVersioning", "GET", .bucket, query: "versioning", .read) { try $0.getVersioning($1) },
        S3Operation("PutBucketVersioning", "PUT", .bucket, query: "versioning", .write) { _, _ in
            throw S3Error(501, "NotImplemented", "this gateway keeps no versions")
        },
        S3Operation("GetBucketLocation", "GET", .bucket, query: "location", .read) { try $0.getLocation($1) },
        S3Operation("ListMultipartUploads", "GET", .bucket, query: "uploads", .read) { try $0.listUploads($1) },
        S3Operation("ListObjectVersions", "GET", .bucket, query: "versions", .read) { try $0.listObjects($1, versions: true) },
        S3Operation("ListObjectsV2", "GET", .bucket, query: "list-type", .read) { try $0.listObjects($1, v2: true) },
        S3Operation("ListObjects", "GET", .bucket, .read) { try $0.listObjects($1) },
        S3Operation("HeadBucket", "HEAD", .bucket, .read) { try $0.headBucket($1) },
        S3Operation("CreateBucket", "PUT", .bucket, .write) { try $0.createBucket($1) },
        S3Operation("DeleteBucket", "DELETE", .bucket, .write) { try $0.deleteBucket($1) },
        S3Operation("DeleteObjects", "POST", .bucket, query: "delete", .write) { try $0.deleteObjects($1) },

        S3Operation("GetObjectAcl", "GET", .object, query: "acl", .read) { try $0.getACL($1) },
        S3Operation("PutObjectAcl", "PUT", .object, query: "acl", .write) { try $0.putACL($1) },
        S3Operation("UploadPartCopy", "PUT", .object, query: "uploadId", header: "x-amz-copy-source", .write) { try $0.uploadPart($1, copy: true) },
        S3Operation("UploadPart", "PUT", .object, query: "uploadId", .write) { try $0.uploadPart($1, copy: false) },
        S3Operation("CopyObject", "PUT", .object, header: "x-amz-copy-source", .write) { try $0.copyObject($1) },
        S3Operation("PutObject", "PUT", .object, .write) { try $0.putObject($1) },
        S3Operation("ListParts", "GET", .object, query: "uploadId", .read) { try $0.listParts($1) },
        S3Operation("GetObject", "GET", .object, .read) { try $0.getObject($1) },
        S3Operation("HeadObject", "HEAD", .object, .read) { try $0.getObject($1) },
        S3Operation("AbortMultipartUpload", "DELETE", .object, query: "uploadId", .write) { try $0.abortUpload($1) },
        S3Operation("DeleteObject", "DELETE", .object, .write) { try $0.deleteObject($1) },
        S3Operation("CreateMultipartUpload", "POST", .object, query: "uploads", .write) { try $0.createUpload($1) },
        S3Operation("CompleteMultipartUpload", "POST", .object, query: "uploadId", .write) { try $0.completeUpload($1) },
    ]

    static func notImplemented(_ feature: String) -> S3Error {
        S3Error(501, "NotImplemented", "The \(feature) sub-resource is not implemented by this gateway.")
    }
}

extension S3Gateway {
    /// An XML answer.
    static func xml(_ status: Int = 200, _ build: (inout S3XML.Writer) -> Void) -> HTTPResponse {
        var writer = S3XML.Writer()
        build(&writer)
        var response = HTTPResponse(status: status, body: .bytes(writer.bytes))
        response.headers.set("Content-Type", "application/xml")
        return response
    }

    /// A small request body (XML), read whole and checked like any upload.
    func smallBody(_ context: S3Context, limit: Int = 2 * 1024 * 1024) throws -> [UInt8] {
        let upload = try S3UploadBody(context.request, context.body, payload: context.identity.payload)
        let tooBig = S3Error(400, "MaxMessageLengthExceeded", "Your request was too big.")
        guard (upload.length ?? 0) <= limit else { throw tooBig }
        var bytes: [UInt8] = []
        var piece = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = try piece.withUnsafeMutableBytes { try upload.read(into: $0) }
            if count == 0 { break }
            guard bytes.count + count <= limit else { throw tooBig }
            bytes += piece[0..<count]
        }
        try upload.finish()
        return bytes
    }

    /// A non-negative count from the query (`max-uploads`, `max-parts`), or 400.
    static func count(_ context: S3Context, _ name: String, default value: Int) throws -> Int {
        guard let text = context.query[name] else { return value }
        guard let number = Int(text), number >= 0 else { throw S3Error.invalidArgument("\(name) must be a whole number, 0 or more") }
        return number
    }

    func owner(_ context: S3Context, into xml: inout S3XML.Writer) {
        let name = context.identity.user ?? "kalavara"
        xml.element("Owner") { xml in
            xml.text("ID", name)
            xml.text("DisplayName", name)
        }
    }
}
