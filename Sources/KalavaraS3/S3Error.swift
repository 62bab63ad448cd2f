import KalavaraCore
import KalavaraHTTP
/// An S3 error answer: its HTTP status, S3's code and a one-line reason, sent as S3's XML
/// error body (`<Error><Code>…</Code><Message>…</Message>…</Error>`), which every S3
/// client parses into its exception.
public struct S3Error: Error, Equatable, CustomStringConvertible {
    public let status: Int
    public let code: String
    public let message: String
    /// `<Resource>`: the bucket or object named.
    public var resource: String?
    /// Extra elements some clients read (e.g. `BucketName`).
    public var extra: [String: String] = [:]
    /// Headers the answer carries (`Retry-After` on `SlowDown`).
    public var headers: [String: String] = [:]

    public init(_ status: Int, _ code: String, _ message: String, resource: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.resource = resource
    }

    public var description: String { "\(status) \(code): \(message)" }

    public func response(requestID: String) -> HTTPResponse {
        var writer = S3XML.Writer()
        writer.element("Error") { xml in
            xml.text("Code", code)
            xml.text("Message", message)
            xml.text("Resource", resource)
            for (name, value) in extra.sorted(by: { $0.key < $1.key }) { xml.text(name, value) }
            xml.text("RequestId", requestID)
        }
        var answer = HTTPResponse(status: status, body: .bytes(writer.bytes))
        answer.headers.set("Content-Type", "application/xml")
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { answer.headers.set(name, value) }
        answer.explanation = "\(code): \(message)"
        return answer
    }

    // The codes clients act on, as S3 names them.
    public static func noSuchBucket(_ bucket: String) -> S3Error {
        var error = S3Error(404, "NoSuchBucket", "The specified bucket does not exist", resource: "/\(bucket)")
        error.extra["BucketName"] = bucket
        return error
    }
    public static func noSuchKey(_ key: String) -> S3Error { S3Error(404, "NoSuchKey", "The specified key does not exist.", resource: key) }
    public static func noSuchUpload(_ id: String) -> S3Error {
        S3Error(404, "NoSuchUpload", "The specified multipart upload does not exist.", resource: id)
    }
    public static func invalidArgument(_ message: String) -> S3Error { S3Error(400, "InvalidArgument", message) }
    public static func malformedXML(_ message: String) -> S3Error {
        S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not validate: \(message)")
    }
    public static func internalError(_ message: String) -> S3Error { S3Error(500, "InternalError", message) }
    public static func unavailable(_ message: String) -> S3Error { S3Error(503, "ServiceUnavailable", message) }
    public static let accessDenied = S3Error(403, "AccessDenied", "Access Denied")
    /// A signed request whose date cannot be read: refused as S3 does, never as a clock skew.
    public static let undated = S3Error(403, "AccessDenied", SignatureV4.Failure.undated.description)
    /// A key that is not UTF-8 once percent-decoded (S3's keys are UTF-8).
    public static let unparsableURI = S3Error(400, "InvalidURI", "Couldn't parse the specified URI.")
    public static let preconditionFailed = S3Error(412, "PreconditionFailed", "At least one of the preconditions you specified did not hold")
}
