import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// Multipart uploads. An upload is a record `.s3/uploads/BUCKET/ID` (its object key and
/// attributes, JSON) and its parts are ordinary values `.s3/parts/ID/NNNNN`, each streamed to
/// the volumes like any PUT. Completion stitches the parts, in order, into one value under the
/// object's key through the normal PUT path (so native reads, replicas, repair and ranges work
/// unchanged), then removes the parts and the record. The upload ID begins with its creation
/// time, so the sweeper finds abandoned ones without reading them.
extension S3Gateway {
    struct UploadRecord: Codable {
        let key: String
        let attributes: String
    }

    static let partsPrefix = Array(".s3/parts/".utf8)
    static let uploadsPrefix = Array(".s3/uploads/".utf8)

    static func uploadPrefix(_ bucket: String) -> [UInt8] { uploadsPrefix + Array((bucket + "/").utf8) }
    static func uploadKey(_ bucket: String, _ id: String) throws -> Key { try Key(uploadPrefix(bucket) + Array(id.utf8)) }
    static func partPrefix(_ id: String) -> [UInt8] { partsPrefix + Array((id + "/").utf8) }
    static func partKey(_ id: String, _ number: Int) throws -> Key {
        try Key(partPrefix(id) + Array(String(format: "%05d", number).utf8))
    }

    /// 12 hex digits of milliseconds since 1970, then 16 random ones.
    static func newUploadID(now: Date = Date()) -> String {
        var random = SystemRandomNumberGenerator()
        return String(format: "%012llx", UInt64(now.timeIntervalSince1970 * 1000)) + String(format: "%016llx", random.next() as UInt64)
    }

    /// When an upload was created (seconds since 1970), nil for an ID that is not ours.
    static func uploadTime(_ id: String) -> Double? {
        guard id.utf8.count == 28, id.utf8.allSatisfy({ ASCII.hexValue($0) != nil }), let ms = UInt64(id.prefix(12), radix: 16) else { return nil }
        return Double(ms) / 1000
    }

    func uploadID(_ context: S3Context) throws -> String {
        guard let id = context.query["uploadId"], Self.uploadTime(id) != nil else { throw S3Error.noSuchUpload(context.query["uploadId"] ?? "") }
        return id
    }

    /// The upload's record, checked to belong to this bucket and key.
    func uploadRecord(_ context: S3Context, _ id: String) throws -> UploadRecord {
        guard let bytes = try cluster.read(try Self.uploadKey(context.bucket, id)),
              let record = try? JSONDecoder().decode(UploadRecord.self, from: Data(bytes)), record.key == context.keyText else {
            throw S3Error.noSuchUpload(id)
        }
        return record
    }

    func createUpload(_ context: S3Context) throws -> HTTPResponse {
        _ = try context.objectKey()
        try requireBucket(context.bucket)
        let attributes = try ObjectAttributes(request: context.request.headers)
        try attributes.checkSize()
        let id = Self.newUploadID()
        let record = try JSONEncoder().encode(UploadRecord(key: context.keyText, attributes: attributes.encoded))
        try cluster.write(try Self.uploadKey(context.bucket, id), Array(record))
        return Self.xml { xml in
            xml.element("InitiateMultipartUploadResult", namespace: true) { xml in
                xml.text("Bucket", context.bucket)
                xml.text("Key", context.keyText)
                xml.text("UploadId", id)
            }
        }
    }

    func uploadPart(_ context: S3Context, copy: Bool) throws -> HTTPResponse {
        guard let text = context.query["partNumber"], let number = Int(text), (1...10_000).contains(number) else {
            throw S3Error.invalidArgument("Part number must be an integer between 1 and 10000, inclusive")
        }
        let id = try uploadID(context)
        _ = try uploadRecord(context, id) // exists, and is this key's
        let key = try Self.partKey(id, number)
        if copy {
            let source = try copySource(context)
            let range = context.header("x-amz-copy-source-range")
            if let range {
                // Exactly bytes=FIRST-LAST, inside the source (where a GET would clip it).
                let bounds = range.hasPrefix("bytes=") ? range.dropFirst(6).split(separator: "-", omittingEmptySubsequences: false) : []
                guard bounds.count == 2, let first = UInt64(bounds[0]), let last = UInt64(bounds[1]), first <= last else {
                    throw S3Error.invalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
                }
                if let size = source.info.size, last >= size {
                    throw S3Error(416, "InvalidRange", "The x-amz-copy-source-range is not within the source object of size \(size)")
                }
            }
            let stored = try copyValue(source.entry, range: range, to: key, attributes: ObjectAttributes())
            return Self.xml { xml in
                xml.element("CopyPartResult", namespace: true) { xml in
                    xml.text("LastModified", ObjectInfo.iso8601(ObjectInfo.seconds(ofVersion: stored.version)))
                    xml.text("ETag", ObjectInfo.etag(md5: stored.md5, attributes: ObjectAttributes(), version: stored.version))
                }
            }
        }
        let upload = try S3UploadBody(context.request, context.body, payload: context.identity.payload)
        let stored = try cluster.store(key, length: upload.length, attributes: nil, md5: true,
                                       source: { try upload.read(into: $0) }, verify: { try upload.finish() })
        var response = HTTPResponse(status: 200)
        response.headers.set("ETag", ObjectInfo.etag(md5: stored.md5, attributes: ObjectAttributes(), version: stored.version))
        return response
    }

    struct Part {
        let number: Int
        let size: UInt64
        let md5: [UInt8]
        let version: UInt64
    }

    func parts(_ id: String) throws -> [Part] {
        try cluster.listAll(prefix: Self.partPrefix(id), limit: 10_000).compactMap { entry in
            guard let number = Int(String(decoding: entry.key.dropFirst(Self.partPrefix(id).count), as: UTF8.self)),
                  let detail = entry.detail, let md5 = detail.md5.flatMap(Hex.decode) else { return nil }
            return Part(number: number, size: detail.size, md5: md5, version: detail.version)
        }
    }

    func listParts(_ context: S3Context) throws -> HTTPResponse {
        let id = try uploadID(context)
        _ = try uploadRecord(context, id)
        let marker = context.query["part-number-marker"].flatMap(Int.init) ?? 0
        let maxParts = min(try Self.count(context, "max-parts", default: 1000), 1000)
        var selected = try parts(id).filter { $0.number > marker }
        let truncated = selected.count > maxParts
        if truncated { selected.removeLast(selected.count - maxParts) }
        return Self.xml { xml in
            xml.element("ListPartsResult", namespace: true) { xml in
                xml.text("Bucket", context.bucket)
                xml.text("Key", context.keyText)
                xml.text("UploadId", id)
                xml.element("Initiator") { xml in
                    xml.text("ID", context.identity.user ?? "kalavara")
                    xml.text("DisplayName", context.identity.user ?? "kalavara")
                }
                owner(context, into: &xml)
                xml.text("StorageClass", "STANDARD")
                xml.text("PartNumberMarker", String(marker))
                if let last = selected.last { xml.text("NextPartNumberMarker", String(last.number)) }
                xml.text("MaxParts", String(maxParts))
                xml.text("IsTruncated", truncated ? "true" : "false")
                for part in selected {
                    xml.element("Part") { xml in
                        xml.text("PartNumber", String(part.number))
                        xml.text("LastModified", ObjectInfo.iso8601(ObjectInfo.seconds(ofVersion: part.version)))
                        xml.text("ETag", "\"\(Hex.encode(part.md5))\"")
                        xml.text("Size", String(part.size))
                    }
                }
            }
        }
    }

    func completeUpload(_ context: S3Context) throws -> HTTPResponse {
        let id = try uploadID(context)
        let objectKey = try context.objectKey()
        let document: S3XML.Element
        do { document = try S3XML.parse(try smallBody(context)) } catch let error as S3XML.ParseError {
            throw S3Error.malformedXML(error.reason)
        }
        guard document.name == "CompleteMultipartUpload" else { throw S3Error.malformedXML("the root element must be CompleteMultipartUpload") }
        var wanted: [(number: Int, etag: String)] = []
        for part in document.all("Part") {
            guard let number = part.value("PartNumber").flatMap(Int.init), let etag = part.value("ETag") else {
                throw S3Error.malformedXML("each Part needs a PartNumber and an ETag")
            }
            let tag = etag.replacingOccurrences(of: "\"", with: "").lowercased()
            if let last = wanted.last, last.number == number {
                wanted[wanted.count - 1] = (number, tag) // named twice: the later entry counts, as in S3
                continue
            }
            guard wanted.last.map({ $0.number < number }) ?? true else {
                throw S3Error(400, "InvalidPartOrder", "The list of parts was not in ascending order. The parts list must be specified in order by part number.")
            }
            wanted.append((number, tag))
        }
        guard !wanted.isEmpty else { throw S3Error.malformedXML("CompleteMultipartUpload names no parts") }
        let record: UploadRecord
        do {
            record = try uploadRecord(context, id)
        } catch let error as S3Error where error.code == "NoSuchUpload" {
            // A client retrying a completion that succeeded (its answer lost): the object is
            // there with the ETag these parts make, so the answer is the same again.
            let digest = MD5.hasher()
            for want in wanted { digest.update(Hex.decode(want.etag) ?? []) }
            let etag = "\(Hex.encode(digest.finish()))-\(wanted.count)"
            guard let entry = try cluster.locate(objectKey), entry.attributes.etag == etag else { throw error }
            return Self.xml { Self.completed(&$0, bucket: context.bucket, key: context.keyText, etag: "\"\(etag)\"") }
        }
        try checkWriteConditions(context, objectKey)
        let stored = Dictionary(try parts(id).map { ($0.number, $0) }, uniquingKeysWith: { a, _ in a })
        var chosen: [Part] = []
        for (index, want) in wanted.enumerated() {
            guard let part = stored[want.number], Hex.encode(part.md5) == want.etag else {
                throw S3Error(400, "InvalidPart", "One or more of the specified parts could not be found. The part may not have been uploaded, "
                              + "or the specified entity tag may not match the part's entity tag.")
            }
            if index < wanted.count - 1, part.size < UInt64(configuration.minPartSize) {
                var error = S3Error(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.")
                error.extra = ["PartNumber": String(part.number), "ProposedSize": String(part.size), "MinSizeAllowed": String(configuration.minPartSize)]
                throw error
            }
            chosen.append(part)
        }
        let digest = MD5.hasher()
        for part in chosen { digest.update(part.md5) }
        var attributes = ObjectAttributes(encoded: record.attributes)
        attributes.etag = "\(Hex.encode(digest.finish()))-\(chosen.count)"
        let etag = "\"\(attributes.etag!)\""
        let total = chosen.reduce(0) { $0 + Int($1.size) }
        let bucket = context.bucket, keyText = context.keyText, requestID = context.requestID

        // From here the answer is 200: S3 sends its head at once and spaces while it works,
        // so no client times out on a large object, and reports a failure in the body.
        var response = HTTPResponse(status: 200)
        response.headers.set("Content-Type", "application/xml")
        response.headers.set("Transfer-Encoding", "chunked")
        response.body = .stream(BodyStream(count: nil) { [self] write in
            func send(_ text: String) throws { try Array(text.utf8).withUnsafeBytes { try write($0) } }
            try send("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            var lastSent = monotonicSeconds()
            var failure: S3Error?
            do {
                let reader = PartReader(cluster: cluster, id: id, parts: chosen)
                defer { reader.close() }
                _ = try cluster.store(objectKey, length: total, attributes: attributes, md5: false,
                                      source: { try reader.read(into: $0) }, verify: { try reader.finish() },
                                      between: {
                                          if monotonicSeconds() - lastSent > 5 {
                                              try? send(" ")
                                              lastSent = monotonicSeconds()
                                          }
                                      })
            } catch let error as S3Error {
                failure = error
            } catch {
                failure = S3Error.internalError("\(error)")
            }
            var xml = S3XML.Writer()
            if let failure {
                xml.element("Error") { xml in
                    xml.text("Code", failure.code)
                    xml.text("Message", failure.message)
                    xml.text("RequestId", requestID)
                }
            } else {
                Self.completed(&xml, bucket: bucket, key: keyText, etag: etag)
                // The record goes before the answer, so a retried completion finds the object
                // (see above) instead of stitching again; the parts go after it (a crash in
                // between leaves parts the sweeper finds by their upload ID's age).
                _ = try? cluster.delete(try Self.uploadKey(bucket, id))
                cleanup.async { [self] in try? removeParts(id) }
            }
            try send(String(xml.text.drop { $0 != ">" }.dropFirst().drop { $0 == "\n" }))
        })
        return response
    }

    static func completed(_ xml: inout S3XML.Writer, bucket: String, key: String, etag: String) {
        xml.element("CompleteMultipartUploadResult", namespace: true) { xml in
            xml.text("Location", "/\(bucket)/\(key)")
            xml.text("Bucket", bucket)
            xml.text("Key", key)
            xml.text("ETag", etag)
        }
    }

    func abortUpload(_ context: S3Context) throws -> HTTPResponse {
        let id = try uploadID(context)
        _ = try uploadRecord(context, id)
        try removeUpload(bucket: context.bucket, id: id)
        return HTTPResponse(status: 204)
    }

    /// Removes an upload's parts, then its record (so a crash in between leaves the record,
    /// and the sweeper finishes the job).
    func removeUpload(bucket: String, id: String) throws {
        try removeParts(id)
        try cluster.delete(try Self.uploadKey(bucket, id))
    }

    func removeParts(_ id: String) throws {
        for part in try cluster.listAll(prefix: Self.partPrefix(id), limit: 10_000) {
            try cluster.delete(try Key(part.key))
        }
    }

    func listUploads(_ context: S3Context) throws -> HTTPResponse {
        try requireBucket(context.bucket)
        let prefix = context.query["prefix"] ?? ""
        let keyMarker = context.query["key-marker"] ?? ""
        let idMarker = context.query["upload-id-marker"] ?? ""
        let maxUploads = min(try Self.count(context, "max-uploads", default: 1000), 1000)
        var uploads: [(key: String, id: String)] = []
        for marker in try cluster.listAll(prefix: Self.uploadPrefix(context.bucket), limit: 10_000) {
            let id = String(decoding: marker.key.dropFirst(Self.uploadPrefix(context.bucket).count), as: UTF8.self)
            guard let bytes = try cluster.read(try Key(marker.key)),
                  let record = try? JSONDecoder().decode(UploadRecord.self, from: Data(bytes)), record.key.hasPrefix(prefix) else { continue }
            if !keyMarker.isEmpty, record.key < keyMarker || (record.key == keyMarker && (idMarker.isEmpty || id <= idMarker)) { continue }
            uploads.append((record.key, id))
        }
        uploads.sort { $0.key == $1.key ? $0.id < $1.id : $0.key < $1.key }
        let truncated = uploads.count > maxUploads
        if truncated { uploads.removeLast(uploads.count - maxUploads) }
        return Self.xml { xml in
            xml.element("ListMultipartUploadsResult", namespace: true) { xml in
                xml.text("Bucket", context.bucket)
                xml.text("KeyMarker", keyMarker)
                xml.text("UploadIdMarker", idMarker)
                if truncated, let last = uploads.last {
                    xml.text("NextKeyMarker", last.key)
                    xml.text("NextUploadIdMarker", last.id)
                }
                xml.text("Prefix", prefix)
                xml.text("MaxUploads", String(maxUploads))
                xml.text("IsTruncated", truncated ? "true" : "false")
                for upload in uploads {
                    xml.element("Upload") { xml in
                        xml.text("Key", upload.key)
                        xml.text("UploadId", upload.id)
                        xml.element("Initiator") { xml in
                            xml.text("ID", context.identity.user ?? "kalavara")
                            xml.text("DisplayName", context.identity.user ?? "kalavara")
                        }
                        owner(context, into: &xml)
                        xml.text("StorageClass", "STANDARD")
                        xml.text("Initiated", ObjectInfo.iso8601(Int(Self.uploadTime(upload.id) ?? 0)))
                    }
                }
            }
        }
    }

    /// Removes uploads (records and parts) created more than `grace` seconds ago, and parts
    /// whose upload is that old and already gone. Returns how many uploads it removed.
    func sweepUploads(olderThan grace: Double, now: Date = Date()) throws -> Int {
        let cutoff = now.timeIntervalSince1970 - grace
        var swept = Set<String>()
        for marker in try cluster.listAll(prefix: Self.uploadsPrefix) {
            let rest = marker.key.dropFirst(Self.uploadsPrefix.count)
            guard let slash = rest.lastIndex(of: UInt8(ascii: "/")) else { continue }
            let bucket = String(decoding: rest[rest.startIndex..<slash], as: UTF8.self)
            let id = String(decoding: rest[(slash + 1)...], as: UTF8.self)
            guard let created = Self.uploadTime(id), created < cutoff else { continue }
            try removeUpload(bucket: bucket, id: id)
            swept.insert(id)
        }
        var after: [UInt8]?
        while true {
            let page = try cluster.list(prefix: Self.partsPrefix, delimiter: Array("/".utf8), after: after, limit: 1000)
            for prefix in page.prefixes ?? [] {
                let id = String(prefix.dropFirst(Self.partsPrefix.count).dropLast())
                guard !swept.contains(id), let created = Self.uploadTime(id), created < cutoff else { continue }
                try removeParts(id)
                swept.insert(id)
            }
            guard let next = page.next else { break }
            after = Array(next.utf8)
        }
        return swept.count
    }
}

/// The parts of an upload read one after another from their volumes, as one stream; each
/// part must deliver exactly the size the index holds for it.
final class PartReader {
    private let cluster: ClusterLink
    private let id: String
    private let parts: [S3Gateway.Part]
    private var index = 0
    private var current: OpenAnswer?
    private var readOfCurrent: UInt64 = 0

    init(cluster: ClusterLink, id: String, parts: [S3Gateway.Part]) {
        self.cluster = cluster
        self.id = id
        self.parts = parts
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while index < parts.count {
            if current == nil {
                guard let entry = try cluster.locate(try S3Gateway.partKey(id, parts[index].number)), entry.version == parts[index].version else {
                    throw S3Error(400, "InvalidPart", "part \(parts[index].number) changed or vanished during completion")
                }
                let answer = try cluster.open(entry)
                guard answer.status == 200 else {
                    answer.close()
                    throw S3Error.unavailable("reading part \(parts[index].number): the volume answered \(answer.status)")
                }
                current = answer
                readOfCurrent = 0
            }
            let count = try current!.body.read(into: buffer)
            if count > 0 {
                readOfCurrent += UInt64(count)
                guard readOfCurrent <= parts[index].size else { throw S3Error.internalError("part \(parts[index].number) is longer than recorded") }
                return count
            }
            guard readOfCurrent == parts[index].size else { throw S3Error.internalError("part \(parts[index].number) is shorter than recorded") }
            current?.close()
            current = nil
            index += 1
        }
        return 0
    }

    func finish() throws {
        guard index == parts.count || (index == parts.count - 1 && readOfCurrent == parts[index].size) else {
            throw S3Error.internalError("the parts ended early")
        }
    }

    func close() { current?.close() }
}
