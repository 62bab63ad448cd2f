import Foundation
import KalavaraCore
import KalavaraHTTP

/// Bucket operations and listings. A bucket exists while its marker key
/// `.s3/buckets/NAME` does; its objects are the keys `NAME/...`.
extension S3Gateway {
    /// ListBuckets, paged with `max-buckets` and `continuation-token` (the last name, base64),
    /// filtered by `prefix`.
    func listBuckets(_ context: S3Context) throws -> HTTPResponse {
        let maxBuckets = min(context.query["max-buckets"].flatMap(Int.init) ?? 10_000, 10_000)
        guard maxBuckets >= 1 else { throw S3Error.invalidArgument("max-buckets must be a number from 1 to 10000") }
        var after: [UInt8]?
        if let token = context.query["continuation-token"] {
            guard let decoded = Data(base64Encoded: token) else { throw S3Error.invalidArgument("The continuation token provided is incorrect") }
            after = Self.bucketPrefix + Array(decoded)
        }
        let prefix = Self.bucketPrefix + (context.query.bytes("prefix") ?? [])
        let page = try cluster.list(prefix: prefix, after: after, limit: maxBuckets + 1)
        var markers = zip(page.keys, page.details ?? []).map { key, detail in
            (name: String(decoding: Array(key.utf8).dropFirst(Self.bucketPrefix.count), as: UTF8.self), detail: detail)
        }
        let truncated = markers.count > maxBuckets
        if truncated { markers.removeLast(markers.count - maxBuckets) }
        return Self.xml { xml in
            xml.element("ListAllMyBucketsResult", namespace: true) { xml in
                owner(context, into: &xml)
                xml.element("Buckets") { xml in
                    for marker in markers {
                        xml.element("Bucket") { xml in
                            xml.text("Name", marker.name)
                            xml.text("CreationDate", ObjectInfo.iso8601(ObjectInfo.seconds(ofVersion: marker.detail.version)))
                        }
                    }
                }
                if truncated, let last = markers.last { xml.text("ContinuationToken", Data(last.name.utf8).base64EncodedString()) }
                if let prefix = context.query["prefix"] { xml.text("Prefix", prefix) }
            }
        }
    }

    func headBucket(_ context: S3Context) throws -> HTTPResponse {
        forgetBucket(context.bucket)
        try requireBucket(context.bucket)
        var response = HTTPResponse(status: 200)
        response.headers.set("x-amz-bucket-region", "us-east-1")
        return response
    }

    func createBucket(_ context: S3Context) throws -> HTTPResponse {
        guard S3Context.isValidBucketName(context.bucket) else {
            throw S3Error(400, "InvalidBucketName", "The specified bucket is not valid.", resource: context.bucket)
        }
        let configuration = try smallBody(context, limit: 64 * 1024)
        var region = ""
        if !configuration.isEmpty {
            do { region = try S3XML.parse(configuration).value("LocationConstraint") ?? "" } catch { throw S3Error.malformedXML("\(error)") }
        }
        // Region names, and S3's legacy upper-case `EU` (s3cmd --bucket-location=EU).
        guard region.utf8.count <= 64, region.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x41...0x5A).contains($0)
                                                              || (0x30...0x39).contains($0) || $0 == 0x2D }) else {
            throw S3Error(400, "InvalidLocationConstraint", "The specified location-constraint is not valid")
        }
        let marker = try Self.bucketKey(context.bucket)
        if try cluster.locate(marker) == nil {
            // The marker's value is the bucket's region, as GetBucketLocation answers it:
            // every region is this one cluster, but a client that created a bucket "in"
            // eu-west-1 reads that back. us-east-1 is S3's empty LocationConstraint.
            try cluster.write(marker, region == "us-east-1" ? [] : Array(region.utf8))
        } else if !region.isEmpty, region != "us-east-1" {
            // As S3 does: outside us-east-1, creating a bucket one already owns is an error;
            // in us-east-1 (no LocationConstraint) it succeeds again.
            throw S3Error(409, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.",
                          resource: context.bucket)
        }
        var response = HTTPResponse(status: 200)
        response.headers.set("Location", "/\(context.bucket)")
        return response
    }

    func deleteBucket(_ context: S3Context) throws -> HTTPResponse {
        forgetBucket(context.bucket)
        try requireBucket(context.bucket)
        let objects = try cluster.list(prefix: Array((context.bucket + "/").utf8), limit: 1)
        guard objects.keys.isEmpty else {
            throw S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty", resource: context.bucket)
        }
        // Uploads never completed go with the bucket.
        for upload in try cluster.listAll(prefix: Self.uploadPrefix(context.bucket), limit: 100_000) {
            let id = String(decoding: upload.key.dropFirst(Self.uploadPrefix(context.bucket).count), as: UTF8.self)
            try removeUpload(bucket: context.bucket, id: id)
        }
        try cluster.delete(try Self.bucketKey(context.bucket))
        forgetBucket(context.bucket)
        return HTTPResponse(status: 204)
    }

    func getACL(_ context: S3Context) throws -> HTTPResponse {
        try requireBucket(context.bucket)
        if context.level == .object, try cluster.locate(try context.objectKey()) == nil { throw S3Error.noSuchKey(context.keyText) }
        let name = context.identity.user ?? "kalavara"
        return Self.xml { xml in
            xml.element("AccessControlPolicy", namespace: true) { xml in
                owner(context, into: &xml)
                xml.element("AccessControlList") { xml in
                    xml.text += "<Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\">"
                        + "<ID>\(S3XML.escape(name))</ID><DisplayName>\(S3XML.escape(name))</DisplayName></Grantee>"
                        + "<Permission>FULL_CONTROL</Permission></Grant>"
                }
            }
        }
    }

    /// Canned ACLs are accepted and not kept: access is by `--auth-file` rights alone.
    func putACL(_ context: S3Context) throws -> HTTPResponse {
        try requireBucket(context.bucket)
        _ = try smallBody(context, limit: 64 * 1024)
        return HTTPResponse(status: 200)
    }

    func getVersioning(_ context: S3Context) throws -> HTTPResponse {
        try requireBucket(context.bucket)
        return Self.xml { xml in xml.element("VersioningConfiguration", namespace: true) { _ in } }
    }

    /// The LocationConstraint the bucket was created with (its marker's value); S3's empty
    /// element for us-east-1 or none.
    func getLocation(_ context: S3Context) throws -> HTTPResponse {
        guard S3Context.isValidBucketName(context.bucket), let marker = try cluster.read(try Self.bucketKey(context.bucket), limit: 1024) else {
            throw S3Error.noSuchBucket(context.bucket)
        }
        // The marker is a key like any other (the native API can write it): escaped, and
        // read as no location unless it is one CreateBucket could have stored.
        let region = marker.count <= 64 ? String(decoding: marker, as: UTF8.self) : ""
        return Self.xml { xml in
            if region.isEmpty {
                xml.text += "<LocationConstraint xmlns=\"\(S3XML.namespace)\"/>"
            } else {
                xml.text += "<LocationConstraint xmlns=\"\(S3XML.namespace)\">\(S3XML.escape(region))</LocationConstraint>"
            }
        }
    }

    // MARK: Listing

    /// ListObjects (V1), ListObjectsV2 and ListObjectVersions (every object is its one
    /// version, `null`), from one walk of the master's listing with the delimiter.
    func listObjects(_ context: S3Context, v2: Bool = false, versions: Bool = false) throws -> HTTPResponse {
        try requireBucket(context.bucket)
        let query = context.query
        let prefix = query.bytes("prefix") ?? []
        let delimiter = query.bytes("delimiter").flatMap { $0.isEmpty ? nil : $0 }
        var maxKeys = 1000
        if let text = query["max-keys"] {
            guard let value = Int(text), value >= 0 else { throw S3Error.invalidArgument("max-keys must be a whole number") }
            maxKeys = min(value, 1000)
        }
        let urlEncoded = query["encoding-type"]?.lowercased() == "url"
        if let encoding = query["encoding-type"], encoding.lowercased() != "url" {
            throw S3Error.invalidArgument("Invalid Encoding Method specified in Request")
        }
        var start: [UInt8]?
        if v2 {
            if let token = query["continuation-token"] {
                guard let decoded = Data(base64Encoded: token) else { throw S3Error.invalidArgument("The continuation token provided is incorrect") }
                start = Array(decoded)
            } else {
                start = query.bytes("start-after")
            }
        } else {
            start = query.bytes(versions ? "key-marker" : "marker")
        }
        if start?.isEmpty == true { start = nil }
        let bucketPrefix = Array((context.bucket + "/").utf8)

        // One more than asked for: whether the listing is truncated is then known exactly.
        var entries: [(name: [UInt8], detail: ClusterLink.Page.Detail?, isPrefix: Bool)] = []
        if maxKeys > 0 {
            let page = try cluster.list(prefix: bucketPrefix + prefix, delimiter: delimiter, after: start.map { bucketPrefix + $0 },
                                        limit: maxKeys + 1)
            for (index, key) in page.keys.enumerated() {
                entries.append((Array(Array(key.utf8).dropFirst(bucketPrefix.count)), page.details?[index], false))
            }
            for common in page.prefixes ?? [] { entries.append((Array(Array(common.utf8).dropFirst(bucketPrefix.count)), nil, true)) }
            entries.sort { $0.name.lexicographicallyPrecedes($1.name) }
        }
        let truncated = entries.count > maxKeys
        if truncated { entries.removeLast(entries.count - maxKeys) }
        let last = entries.last?.name

        func encode(_ bytes: [UInt8]) -> String {
            urlEncoded ? SignatureV4.uriEncode(bytes, keepSlash: true) : String(decoding: bytes, as: UTF8.self)
        }
        let root = versions ? "ListVersionsResult" : "ListBucketResult"
        return Self.xml { xml in
            xml.element(root, namespace: true) { xml in
                xml.text("Name", context.bucket)
                // botocore decodes Prefix only in V2 answers, and S3 encodes it only there.
                xml.text("Prefix", v2 ? encode(prefix) : String(decoding: prefix, as: UTF8.self))
                if versions {
                    xml.text("KeyMarker", encode(start ?? []))
                    xml.text("VersionIdMarker", "")
                    if truncated, let last { xml.text("NextKeyMarker", encode(last)); xml.text("NextVersionIdMarker", "null") }
                } else if v2 {
                    if let token = query["continuation-token"] { xml.text("ContinuationToken", token) }
                    if let after = query["start-after"] { xml.text("StartAfter", urlEncoded ? encode(Array(after.utf8)) : after) }
                    xml.text("KeyCount", String(entries.count))
                    if truncated, let last { xml.text("NextContinuationToken", Data(last).base64EncodedString()) }
                } else {
                    xml.text("Marker", encode(start ?? []))
                    if truncated, let last { xml.text("NextMarker", encode(last)) }
                }
                xml.text("MaxKeys", String(maxKeys))
                if let delimiter { xml.text("Delimiter", encode(delimiter)) }
                if urlEncoded { xml.text("EncodingType", "url") }
                xml.text("IsTruncated", truncated ? "true" : "false")
                for entry in entries where !entry.isPrefix {
                    let detail = entry.detail
                    let info = ObjectInfo(size: detail?.size ?? 0, version: detail?.version ?? 0, md5: detail?.md5,
                                          attributes: ObjectAttributes(encoded: detail?.attributes))
                    xml.element(versions ? "Version" : "Contents") { xml in
                        xml.text("Key", encode(entry.name))
                        if versions {
                            xml.text("VersionId", "null")
                            xml.text("IsLatest", "true")
                        }
                        xml.text("LastModified", ObjectInfo.iso8601(info.lastModified))
                        xml.text("ETag", info.etag)
                        xml.text("Size", String(info.size ?? 0))
                        xml.text("StorageClass", "STANDARD")
                        if !v2 || query["fetch-owner"] == "true" { owner(context, into: &xml) }
                    }
                }
                for entry in entries where entry.isPrefix {
                    xml.element("CommonPrefixes") { xml in xml.text("Prefix", encode(entry.name)) }
                }
            }
        }
    }

    // MARK: DeleteObjects

    func deleteObjects(_ context: S3Context) throws -> HTTPResponse {
        try requireBucket(context.bucket)
        let document: S3XML.Element
        do { document = try S3XML.parse(try smallBody(context)) } catch let error as S3XML.ParseError {
            throw S3Error.malformedXML(error.reason)
        }
        guard document.name == "Delete" else { throw S3Error.malformedXML("the root element must be Delete") }
        let objects = document.all("Object")
        guard !objects.isEmpty, objects.count <= 1000 else { throw S3Error.malformedXML("Delete needs 1 to 1000 Object elements") }
        let quiet = document.value("Quiet")?.lowercased() == "true"
        var results: [(key: String, error: S3Error?)] = []
        for object in objects {
            guard let key = object.child("Key")?.text else { throw S3Error.malformedXML("an Object without a Key") }
            do {
                if let version = object.value("VersionId"), version != "null" {
                    throw S3Error(400, "NoSuchVersion", "The specified version does not exist.")
                }
                try cluster.delete(try S3Context.indexKey(bucket: context.bucket, key: Array(key.utf8)))
                results.append((key, nil))
            } catch let error as S3Error {
                results.append((key, error))
            } catch {
                results.append((key, S3Error.internalError("\(error)")))
            }
        }
        return Self.xml { xml in
            xml.element("DeleteResult", namespace: true) { xml in
                for result in results {
                    if let error = result.error {
                        xml.element("Error") { xml in
                            xml.text("Key", result.key)
                            xml.text("Code", error.code)
                            xml.text("Message", error.message)
                        }
                    } else if !quiet {
                        xml.element("Deleted") { xml in xml.text("Key", result.key) }
                    }
                }
            }
        }
    }
}
