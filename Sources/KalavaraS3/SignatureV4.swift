import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// AWS Signature Version 4 as S3 checks it: in the `Authorization` header, in a presigned
/// URL's query, and per chunk of a streaming `aws-chunked` upload. HMAC-SHA256 and SHA-256
/// come from libcrypto (`Support/Digests.swift`); this is the canonical-request machinery
/// around them, written from AWS's specification.
public enum SignatureV4 {
    public static let algorithm = "AWS4-HMAC-SHA256"
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"
    public static let streamingPayload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    public static let streamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    public static let streamingSignedTrailer = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    static let emptyHash = SHA256.hex([])

    /// `AKID/20130524/us-east-1/s3/aws4_request`.
    public struct Scope: Equatable, Sendable {
        public var accessKey: String
        public var date: String
        public var region: String
        public var service: String

        public init(accessKey: String, date: String, region: String, service: String = "s3") {
            self.accessKey = accessKey
            self.date = date
            self.region = region
            self.service = service
        }

        init(credential: Substring) throws {
            let parts = credential.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 5, parts[4] == "aws4_request", parts[1].count == 8, !parts[0].isEmpty else {
                throw Failure.malformed("the credential must be KEY/YYYYMMDD/REGION/SERVICE/aws4_request")
            }
            self.init(accessKey: String(parts[0]), date: String(parts[1]), region: String(parts[2]), service: String(parts[3]))
        }

        /// The scope as it appears in the string to sign (no access key).
        public var text: String { "\(date)/\(region)/\(service)/aws4_request" }
    }

    /// What a request claims about its own signature.
    public struct Claim: Equatable, Sendable {
        public var scope: Scope
        public var signedHeaders: [String]
        public var signature: String
        /// `x-amz-date` (or `X-Amz-Date` in a presigned query): `20130524T000000Z`.
        public var timestamp: String
        /// Presigned URLs: seconds the URL stays valid after `timestamp`.
        public var expires: Int?
        public var isPresigned: Bool { expires != nil }
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// Unreadable signature fields: S3's `AuthorizationHeaderMalformed` / `AuthorizationQueryParametersError`.
        case malformed(String)
        /// Neither `x-amz-date` nor `Date` holds a date: S3's `AccessDenied`, not a skew.
        case undated
        public var description: String {
            switch self {
            case .malformed(let reason): return reason
            case .undated: return "AWS authentication requires a valid Date or x-amz-date header"
            }
        }
    }

    /// Reads the claim from the `Authorization` header, or from a presigned query. Nil when
    /// the request is anonymous (neither).
    public static func claim(method: String, headers: HTTPHeaders, query: QueryParameters) throws -> Claim? {
        if let authorization = headers["Authorization"] {
            guard authorization.hasPrefix(algorithm + " ") else {
                throw Failure.malformed("only \(algorithm) signatures are understood")
            }
            var fields: [String: Substring] = [:]
            for part in authorization.dropFirst(algorithm.count + 1).split(separator: ",") {
                let trimmed = part.trimmingCharacters(in: .whitespaces)
                guard let equals = trimmed.firstIndex(of: "=") else { throw Failure.malformed("unreadable Authorization field") }
                fields[String(trimmed[..<equals])] = Substring(trimmed[trimmed.index(after: equals)...])
            }
            guard let credential = fields["Credential"], let signed = fields["SignedHeaders"], let signature = fields["Signature"] else {
                throw Failure.malformed("Authorization needs Credential, SignedHeaders and Signature")
            }
            // Without x-amz-date, Signature V4 signs with the Date header, in the x-amz-date form.
            guard let timestamp = headers["x-amz-date"] ?? headers["Date"].flatMap(amzTimestamp),
                  date(fromTimestamp: timestamp) != nil else {
                throw Failure.undated
            }
            return Claim(scope: try Scope(credential: credential), signedHeaders: signed.split(separator: ";").map(String.init),
                         signature: String(signature), timestamp: timestamp, expires: nil)
        }
        guard let algorithmParameter = query["X-Amz-Algorithm"] else { return nil }
        guard algorithmParameter == algorithm else { throw Failure.malformed("only \(algorithm) presigned URLs are understood") }
        guard let credential = query["X-Amz-Credential"], let signed = query["X-Amz-SignedHeaders"],
              let signature = query["X-Amz-Signature"], let timestamp = query["X-Amz-Date"],
              let expires = query["X-Amz-Expires"].flatMap(Int.init), (1...S3Authenticator.maxPresignedSeconds).contains(expires) else {
            throw Failure.malformed("a presigned URL needs X-Amz-Credential, -Date, -Expires (1 to \(S3Authenticator.maxPresignedSeconds)), -SignedHeaders and -Signature")
        }
        return Claim(scope: try Scope(credential: Substring(credential)), signedHeaders: signed.split(separator: ";").map(String.init),
                     signature: signature, timestamp: timestamp, expires: expires)
    }

    /// The `x-amz-date` form of an HTTP date (`Fri, 24 May 2013 00:00:00 GMT`, or any form
    /// `HTTPDate.parse` reads), for clients that sign `Date` instead.
    static func amzTimestamp(_ httpDate: String) -> String? {
        HTTPDate.parse(httpDate).map { timestamp(Date(timeIntervalSince1970: Double($0))) }
    }

    /// `20130524T000000Z`.
    public static func timestamp(_ date: Date) -> String {
        var seconds = Int(date.timeIntervalSince1970)
        var fields = tm()
        gmtime_r(&seconds, &fields)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", fields.tm_year + 1900, fields.tm_mon + 1, fields.tm_mday,
                      fields.tm_hour, fields.tm_min, fields.tm_sec)
    }

    public static func date(fromTimestamp text: String) -> Date? {
        let digits = Array(text.utf8)
        guard digits.count == 16, digits[8] == UInt8(ascii: "T"), digits[15] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int32? { Int32(String(decoding: digits[range], as: UTF8.self)) }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8),
              let hour = number(9..<11), let minute = number(11..<13), let second = number(13..<15),
              // timegm would carry a 13th month or a 25th hour over, making a date of no date.
              (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour), (0...59).contains(minute),
              (0...60).contains(second) else { return nil }
        var fields = tm()
        (fields.tm_year, fields.tm_mon, fields.tm_mday) = (year - 1900, month - 1, day)
        (fields.tm_hour, fields.tm_min, fields.tm_sec) = (hour, minute, second)
        return Date(timeIntervalSince1970: Double(timegm(&fields)))
    }

    // MARK: The canonical request

    /// RFC 3986 unreserved characters stay; everything else is `%XX`, upper-case hex.
    /// `/` stays in a path and is encoded in a query.
    public static func uriEncode(_ bytes: [UInt8], keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(bytes.count)
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// The canonical request of S3's specification. `path` is the request's path as sent
    /// (percent-encoded); it is decoded and encoded again the canonical way. `query` without
    /// `X-Amz-Signature`. Header names in `signedHeaders` are lower-case.
    public static func canonicalRequest(method: String, path: Substring, query: QueryParameters, headers: HTTPHeaders,
                                        signedHeaders: [String], payloadHash: String) throws -> String {
        guard let decodedPath = PercentEncoding.decode(path.utf8) else { throw Failure.malformed("bad percent-encoding in the path") }
        let canonicalURI = uriEncode(decodedPath, keepSlash: true)
        var encoded: [(name: String, value: String)] = []
        for pair in query.pairs where pair.name != "X-Amz-Signature" {
            encoded.append((uriEncode(Array(pair.name.utf8), keepSlash: false), uriEncode(pair.value, keepSlash: false)))
        }
        // Sorted by code point (byte order, as all is ASCII now), by value for a repeated name.
        encoded.sort { (a: (name: String, value: String), b: (name: String, value: String)) -> Bool in
            a.name == b.name ? a.value < b.value : a.name < b.name
        }
        let canonicalQuery = encoded.map { (pair: (name: String, value: String)) -> String in pair.name + "=" + pair.value }
            .joined(separator: "&")
        var canonicalHeaders = ""
        for name in signedHeaders {
            let values = headers.fields.filter { $0.name.lowercased() == name }.map { collapseSpaces($0.value) }
            canonicalHeaders += "\(name):\(values.joined(separator: ","))\n"
        }
        return "\(method)\n\(canonicalURI)\n\(canonicalQuery)\n\(canonicalHeaders)\n\(signedHeaders.joined(separator: ";"))\n\(payloadHash)"
    }

    static func collapseSpaces(_ value: String) -> String {
        value.trimmingCharacters(in: .whitespaces).split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    public static func stringToSign(timestamp: String, scope: Scope, canonicalRequest: String) -> String {
        "\(algorithm)\n\(timestamp)\n\(scope.text)\n\(SHA256.hex(Array(canonicalRequest.utf8)))"
    }

    /// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
    public static func signingKey(secret: String, scope: Scope) -> [UInt8] {
        var key = HMACSHA256.authenticationCode(key: Array(("AWS4" + secret).utf8), message: Array(scope.date.utf8))
        for part in [scope.region, scope.service, "aws4_request"] {
            key = HMACSHA256.authenticationCode(key: key, message: Array(part.utf8))
        }
        return key
    }

    public static func signature(signingKey: [UInt8], stringToSign: String) -> String {
        Hex.encode(HMACSHA256.authenticationCode(key: signingKey, message: Array(stringToSign.utf8)))
    }

    /// Whether `given` (hex) is the expected signature, compared in constant time.
    public static func matches(_ given: String, _ expected: String) -> Bool {
        guard let a = Hex.decode(given.lowercased()), let b = Hex.decode(expected) else { return false }
        return HMACSHA256.equal(a, b)
    }

    /// The signature of one chunk of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` body, chained
    /// to the previous chunk's (the first chunk's previous is the request's own signature).
    public static func chunkSignature(signingKey: [UInt8], timestamp: String, scope: Scope, previous: String,
                                      chunk: UnsafeRawBufferPointer) -> String {
        let digest = SHA256.hasher()
        digest.update(chunk)
        let text = "AWS4-HMAC-SHA256-PAYLOAD\n\(timestamp)\n\(scope.text)\n\(previous)\n\(emptyHash)\n\(Hex.encode(digest.finish()))"
        return signature(signingKey: signingKey, stringToSign: text)
    }
}
