import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// What S3 keeps with an object besides its bytes: the headers it returns as stored
/// (`Content-Type`, `Content-Encoding`, ...), the user's `x-amz-meta-*`, and a multipart
/// object's ETag. Kept in the master's index record (`Kalavara-Attributes`), encoded as a
/// query string, so a HEAD needs no volume and a native `curl -L` still reads exactly the
/// object's bytes.
struct ObjectAttributes: Equatable {
    /// Stored headers in S3's order, by their HTTP names.
    static let storedHeaders = ["Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language",
                                "Cache-Control", "Expires"]
    private static let codes = ["ct", "ce", "cd", "cl", "cc", "ex"]
    /// S3's limit on user metadata (names and values).
    static let maxUserMetadataBytes = 2048

    var headers: [(name: String, value: String)] = []
    /// `x-amz-meta-NAME`, names lower-cased as S3 returns them.
    var metadata: [(name: String, value: String)] = []
    /// A multipart object's `"HEX-N"` (without quotes); nil: the MD5 is the ETag.
    var etag: String?

    init() {}

    static func == (a: ObjectAttributes, b: ObjectAttributes) -> Bool {
        a.headers.elementsEqual(b.headers, by: ==) && a.metadata.elementsEqual(b.metadata, by: ==) && a.etag == b.etag
    }

    var isEmpty: Bool { headers.isEmpty && metadata.isEmpty && etag == nil }

    /// No control characters (tab allowed): safe to send as a header value.
    static func isHeaderSafe(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7F || $0 == 0x09 }
    }

    /// What the index can keep with a value: S3's 2 KB of user metadata grows with
    /// percent-encoding, and the stored headers count too.
    func checkSize() throws {
        guard encoded.utf8.count <= IndexRecord.maxAttributeBytes else {
            throw S3Error(400, "MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size once encoded "
                          + "(\(IndexRecord.maxAttributeBytes) bytes).")
        }
    }

    /// From a PUT, copy or CreateMultipartUpload request.
    init(request headers: HTTPHeaders) throws {
        for name in Self.storedHeaders {
            guard var value = headers[name] else { continue }
            if name == "Content-Encoding", value.lowercased().contains("aws-chunked") {
                // aws-chunked is framing of this request, not a property of the object.
                value = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { $0.lowercased() != "aws-chunked" }.joined(separator: ", ")
                if value.isEmpty { continue }
            }
            self.headers.append((name, value))
        }
        var total = 0
        for field in headers.fields {
            let lower = field.name.lowercased()
            guard lower.hasPrefix("x-amz-meta-") else { continue }
            let name = String(lower.dropFirst("x-amz-meta-".count))
            total += name.utf8.count + field.value.utf8.count
            metadata.append((name, field.value))
        }
        guard total <= Self.maxUserMetadataBytes else {
            throw S3Error(400, "MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size (2 KB).")
        }
    }

    init(encoded: String?) {
        guard let encoded, let parameters = try? QueryParameters(Substring(encoded)) else { return }
        for pair in parameters.pairs {
            let value = String(decoding: pair.value, as: UTF8.self)
            // Values become response headers: any a native writer set with CR, LF or other
            // control characters are dropped, never sent.
            guard Self.isHeaderSafe(value), Self.isHeaderSafe(pair.name) else { continue }
            if let index = Self.codes.firstIndex(of: pair.name) {
                headers.append((Self.storedHeaders[index], value))
            } else if pair.name.hasPrefix("m.") {
                metadata.append((String(pair.name.dropFirst(2)), value))
            } else if pair.name == "etag" {
                etag = value
            }
        }
    }

    var encoded: String {
        var parameters = QueryParameters()
        for header in headers {
            if let index = Self.storedHeaders.firstIndex(of: header.name) { parameters.add(Self.codes[index], header.value) }
        }
        for entry in metadata { parameters.add("m." + entry.name, entry.value) }
        if let etag { parameters.add("etag", etag) }
        return parameters.encoded
    }

    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
}

/// The facts S3 answers about an object: its ETag and modification time, from the index.
struct ObjectInfo {
    let size: UInt64?
    let etag: String
    /// Seconds since 1970, from the version (a version is the milliseconds of its issue << 16).
    let lastModified: Int
    let attributes: ObjectAttributes

    init(_ entry: ClusterLink.Entry) {
        size = entry.size
        attributes = entry.attributes
        etag = Self.etag(md5: entry.md5, attributes: entry.attributes, version: entry.version)
        lastModified = Self.seconds(ofVersion: entry.version)
    }

    init(size: UInt64, version: UInt64, md5: String?, attributes: ObjectAttributes) {
        self.size = size
        self.attributes = attributes
        etag = Self.etag(md5: md5.flatMap(Hex.decode), attributes: attributes, version: version)
        lastModified = Self.seconds(ofVersion: version)
    }

    static func seconds(ofVersion version: UInt64) -> Int { Int(version >> 16) / 1000 }

    /// Quoted, as S3 sends it.
    static func etag(md5: [UInt8]?, attributes: ObjectAttributes, version: UInt64) -> String {
        if let etag = attributes.etag { return "\"\(etag)\"" }
        if let md5 { return "\"\(Hex.encode(md5))\"" }
        return "\"\(version)\"" // a value written by the native API: its volume's ETag
    }

    /// `2026-12-02T05:00:00.000Z`, as S3's listings write times.
    static func iso8601(_ seconds: Int) -> String {
        var value = seconds
        var fields = tm()
        gmtime_r(&value, &fields)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.000Z", fields.tm_year + 1900, fields.tm_mon + 1, fields.tm_mday,
                      fields.tm_hour, fields.tm_min, fields.tm_sec)
    }
}
