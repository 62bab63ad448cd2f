import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// Who sent an S3 request, checked by Signature V4 against `--auth-file`, and how its body
/// must be checked as it streams in.
public struct S3Authenticator: Sendable {
    /// Nil: an open gateway, which accepts any credentials (and anonymous requests).
    public let credentials: Credentials?
    /// S3 refuses a signed request whose time is further than this from its own.
    public static let allowedSkew = 15.0 * 60
    /// The longest a presigned URL may work, V4 or V2: S3's seven days.
    public static let maxPresignedSeconds = 604_800

    public init(credentials: Credentials?) {
        self.credentials = credentials
    }

    /// What the request's body must satisfy, from `x-amz-content-sha256`.
    public enum Payload: Sendable {
        /// `UNSIGNED-PAYLOAD`, a presigned URL, or no header at all (open gateway).
        case unchecked
        /// The SHA-256 (hex) the body must have.
        case sha256(String)
        /// An `aws-chunked` body; with `signing`, every chunk's signature is checked, with
        /// `trailer`, a trailer section (a checksum, maybe a trailer signature) follows.
        case awsChunked(signing: ChunkSigning?, trailer: Bool)
    }

    /// What chunk signatures are checked with: the chain starts at the request's signature.
    public struct ChunkSigning: Sendable {
        public let signingKey: [UInt8]
        public let timestamp: String
        public let scope: SignatureV4.Scope
        public let seed: String
    }

    public struct Identity: Sendable {
        /// The access key, nil for an anonymous request to an open gateway.
        public let user: String?
        /// Nil: every right (an open gateway).
        public let rights: Set<Right>?
        public let payload: Payload

        public func may(_ right: Right) -> Bool { rights?.contains(right) ?? true }
    }

    public func authenticate(_ request: HTTPRequest, query: QueryParameters, now: Date = Date()) throws -> Identity {
        if let identity = try authenticateV2(request, query: query, now: now) { return identity }
        if let text = query["X-Amz-Expires"], !(Int(text).map { (1...Self.maxPresignedSeconds).contains($0) } ?? false) {
            throw S3Error(403, "AccessDenied", "X-Amz-Expires must be between 1 and \(Self.maxPresignedSeconds) seconds")
        }
        let claim: SignatureV4.Claim?
        do {
            claim = try SignatureV4.claim(method: request.method, headers: request.headers, query: query)
        } catch SignatureV4.Failure.undated {
            throw S3Error.undated
        } catch let failure as SignatureV4.Failure {
            let code = request.headers["Authorization"] != nil ? "AuthorizationHeaderMalformed" : "AuthorizationQueryParametersError"
            throw S3Error(400, code, failure.description)
        }
        let declared = request.headers["x-amz-content-sha256"]
        guard let claim else {
            guard credentials == nil else { throw S3Error.accessDenied }
            return Identity(user: nil, rights: nil, payload: try Self.payload(declared, signing: nil))
        }
        guard let credentials else {
            // Open: the signature cannot be checked without the secret; the body framing still can.
            return Identity(user: claim.scope.accessKey, rights: nil, payload: try Self.payload(declared, signing: nil))
        }
        request.context?.user = claim.scope.accessKey // for the access log, refused or not
        guard let (secret, rights) = credentials.secretKey(of: claim.scope.accessKey) else {
            throw S3Error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
        }
        guard let signedAt = SignatureV4.date(fromTimestamp: claim.timestamp) else { throw S3Error.undated }
        if let expires = claim.expires {
            guard now.timeIntervalSince(signedAt) <= Double(expires) else { throw S3Error(403, "AccessDenied", "Request has expired") }
            guard signedAt.timeIntervalSince(now) <= Self.allowedSkew else {
                throw S3Error(403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
            }
        } else if abs(now.timeIntervalSince(signedAt)) > Self.allowedSkew {
            throw S3Error(403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
        }
        guard claim.scope.date == String(claim.timestamp.prefix(8)) else {
            throw S3Error(400, "AuthorizationHeaderMalformed", "the credential's date is not the date of x-amz-date")
        }
        // Presigned URLs sign UNSIGNED-PAYLOAD unless the query says otherwise.
        let payloadHash = claim.isPresigned ? (query["X-Amz-Content-Sha256"] ?? declared ?? SignatureV4.unsignedPayload)
            : (declared ?? SignatureV4.unsignedPayload)
        let canonical: String
        do {
            canonical = try SignatureV4.canonicalRequest(method: request.method, path: request.path, query: query,
                                                         headers: request.headers, signedHeaders: claim.signedHeaders,
                                                         payloadHash: payloadHash)
        } catch {
            throw S3Error(400, "InvalidURI", "Couldn't parse the specified URI.")
        }
        let key = SignatureV4.signingKey(secret: secret, scope: claim.scope)
        let expected = SignatureV4.signature(signingKey: key,
                                             stringToSign: SignatureV4.stringToSign(timestamp: claim.timestamp, scope: claim.scope,
                                                                                    canonicalRequest: canonical))
        guard SignatureV4.matches(claim.signature, expected) else {
            throw S3Error(403, "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
        }
        // What the signature does not cover cannot change what the request does: every
        // x-amz-* header must be signed (a presigned PUT must not turn into a copy of another
        // object by an added x-amz-copy-source), and so must Host.
        let signed = Set(claim.signedHeaders)
        guard signed.contains("host") else {
            throw S3Error(403, "AccessDenied", "There were headers present in the request which were not signed: host")
        }
        for field in request.headers.fields {
            let name = field.name.lowercased()
            guard name.hasPrefix("x-amz-"), !signed.contains(name), !(claim.isPresigned && name == "x-amz-content-sha256") else { continue }
            var error = S3Error(403, "AccessDenied", "There were headers present in the request which were not signed")
            error.extra["HeadersNotSigned"] = name
            throw error
        }
        let signing = ChunkSigning(signingKey: key, timestamp: claim.timestamp, scope: claim.scope, seed: expected)
        return Identity(user: claim.scope.accessKey, rights: rights,
                        payload: try Self.payload(claim.isPresigned ? nil : declared, signing: signing))
    }

    static func payload(_ declared: String?, signing: ChunkSigning?) throws -> Payload {
        switch declared {
        case nil, SignatureV4.unsignedPayload?:
            return .unchecked
        case SignatureV4.streamingPayload?:
            return .awsChunked(signing: signing, trailer: false)
        case SignatureV4.streamingSignedTrailer?:
            return .awsChunked(signing: signing, trailer: true)
        case SignatureV4.streamingUnsignedTrailer?:
            return .awsChunked(signing: nil, trailer: true)
        case let hash?:
            guard hash.utf8.count == 64, Hex.decode(hash) != nil else {
                throw S3Error(400, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING- mode or a SHA-256 in hex")
            }
            return .sha256(hash.lowercased())
        }
    }

    // MARK: Signature V2

    /// S3's legacy HMAC-SHA1 signature, in `Authorization: AWS KEY:SIG` or a presigned query
    /// (`AWSAccessKeyId`, `Expires`, `Signature`): what boto3's `generate_presigned_url` still
    /// makes unless told `signature_version="s3v4"`. Nil when the request is not signed so.
    func authenticateV2(_ request: HTTPRequest, query: QueryParameters, now: Date) throws -> Identity? {
        let accessKey: String, signature: String, dateLine: String
        if let authorization = request.headers["Authorization"], authorization.hasPrefix("AWS "),
           let colon = authorization.lastIndex(of: ":") {
            accessKey = String(authorization.dropFirst(4)[..<colon])
            signature = String(authorization[authorization.index(after: colon)...])
            let date = request.headers["x-amz-date"] ?? request.headers["Date"] ?? ""
            guard let signedAt = HTTPDate.parse(date) else { throw S3Error.undated }
            guard abs(now.timeIntervalSince1970 - Double(signedAt)) <= Self.allowedSkew else {
                throw S3Error(403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
            }
            dateLine = request.headers["x-amz-date"] != nil ? "" : date
        } else if let key = query["AWSAccessKeyId"], let given = query["Signature"], let expires = query["Expires"] {
            guard let at = Double(expires) else { throw S3Error(400, "AuthorizationQueryParametersError", "Expires must be a Unix time") }
            guard now.timeIntervalSince1970 <= at else { throw S3Error(403, "AccessDenied", "Request has expired") }
            // As for Signature V4's X-Amz-Expires: a URL that works for seventy years is a
            // credential handed out for good, not a link.
            guard at - now.timeIntervalSince1970 <= Double(Self.maxPresignedSeconds) else {
                throw S3Error(403, "AccessDenied", "Expires must be at most \(Self.maxPresignedSeconds) seconds (7 days) from now")
            }
            (accessKey, signature, dateLine) = (key, given, expires)
        } else {
            return nil
        }
        let payload = try Self.payload(request.headers["x-amz-content-sha256"], signing: nil)
        guard let credentials else { return Identity(user: accessKey, rights: nil, payload: payload) }
        request.context?.user = accessKey
        guard let (secret, rights) = credentials.secretKey(of: accessKey) else {
            throw S3Error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
        }
        var amz: [(String, String)] = []
        for field in request.headers.fields where field.name.lowercased().hasPrefix("x-amz-") {
            let name = field.name.lowercased()
            if let index = amz.firstIndex(where: { $0.0 == name }) { amz[index].1 += "," + field.value.trimmingHTTPWhitespace() }
            else { amz.append((name, field.value.trimmingHTTPWhitespace())) }
        }
        amz.sort { $0.0 < $1.0 }
        var resource = String(request.path)
        let subresources = query.pairs.filter { Self.v2Subresources.contains($0.name) }.sorted { $0.name < $1.name }
        if !subresources.isEmpty {
            resource += "?" + subresources.map { $0.value.isEmpty && !Self.v2Valued.contains($0.name) ? $0.name
                : "\($0.name)=\(String(decoding: $0.value, as: UTF8.self))" }.joined(separator: "&")
        }
        let text = "\(request.method)\n\(request.headers["Content-MD5"] ?? "")\n\(request.headers["Content-Type"] ?? "")\n\(dateLine)\n"
            + amz.map { "\($0.0):\($0.1)\n" }.joined() + resource
        let expected = HMACSHA256.sha1Code(key: Array(secret.utf8), message: Array(text.utf8))
        guard let given = Data(base64Encoded: signature).map(Array.init), HMACSHA256.equal(given, expected) else {
            throw S3Error(403, "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
        }
        return Identity(user: accessKey, rights: rights, payload: payload)
    }

    static let v2Subresources: Set<String> = [
        "acl", "cors", "delete", "lifecycle", "location", "logging", "notification", "partNumber", "policy", "requestPayment",
        "restore", "tagging", "torrent", "uploadId", "uploads", "versionId", "versioning", "versions", "website",
        "response-content-type", "response-content-language", "response-expires", "response-cache-control",
        "response-content-disposition", "response-content-encoding",
    ]
    /// Sub-resources that keep `=` even with an empty value.
    static let v2Valued: Set<String> = ["partNumber", "uploadId", "versionId"]
}
