import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraS3
@testable import KalavaraSupport
import TestSupport
import XCTest

/// Signature V4 against the worked examples of AWS's S3 documentation ("Signature
/// Calculations for the Authorization Header" and "Authenticating Requests: Using Query
/// Parameters"), and against botocore signing requests of its own when it is installed.
final class SignatureV4Tests: XCTestCase {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    let scope = SignatureV4.Scope(accessKey: "AKIAIOSFODNN7EXAMPLE", date: "20130524", region: "us-east-1")

    private func sign(method: String, path: String, query: String = "", headers: [(String, String)], signed: [String],
                      payload: String) throws -> String {
        let canonical = try SignatureV4.canonicalRequest(method: method, path: Substring(path), query: try QueryParameters(Substring(query)),
                                                         headers: HTTPHeaders(headers), signedHeaders: signed, payloadHash: payload)
        let text = SignatureV4.stringToSign(timestamp: "20130524T000000Z", scope: scope, canonicalRequest: canonical)
        return SignatureV4.signature(signingKey: SignatureV4.signingKey(secret: secret, scope: scope), stringToSign: text)
    }

    func testGetObjectExample() throws {
        let signature = try sign(method: "GET", path: "/test.txt",
                                 headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
                                           ("x-amz-content-sha256", SignatureV4.emptyHash), ("x-amz-date", "20130524T000000Z")],
                                 signed: ["host", "range", "x-amz-content-sha256", "x-amz-date"], payload: SignatureV4.emptyHash)
        XCTAssertEqual(signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    func testPresignedURLExample() throws {
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
            + "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        let signature = try sign(method: "GET", path: "/test.txt", query: query, headers: [("Host", "examplebucket.s3.amazonaws.com")],
                                 signed: ["host"], payload: SignatureV4.unsignedPayload)
        XCTAssertEqual(signature, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
        let claim = try XCTUnwrap(try SignatureV4.claim(method: "GET", headers: HTTPHeaders(),
                                                        query: try QueryParameters(Substring(query + "&X-Amz-Signature=" + signature))))
        XCTAssertEqual(claim.scope, scope)
        XCTAssertEqual(claim.expires, 86400)
        XCTAssertEqual(claim.signedHeaders, ["host"])
    }

    func testChunkedUploadExample() throws {
        let headers: [(String, String)] = [("Host", "s3.amazonaws.com"), ("x-amz-date", "20130524T000000Z"),
                                           ("x-amz-storage-class", "REDUCED_REDUNDANCY"), ("Content-Encoding", "aws-chunked"),
                                           ("x-amz-decoded-content-length", "66560"), ("x-amz-content-sha256", SignatureV4.streamingPayload),
                                           ("Content-Length", "66824")]
        let seed = try sign(method: "PUT", path: "/examplebucket/chunkObject.txt", headers: headers,
                            signed: ["content-encoding", "content-length", "host", "x-amz-content-sha256", "x-amz-date",
                                     "x-amz-decoded-content-length", "x-amz-storage-class"],
                            payload: SignatureV4.streamingPayload)
        XCTAssertEqual(seed, "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
        let key = SignatureV4.signingKey(secret: secret, scope: scope)
        var previous = seed
        for (size, expected) in [(65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
                                 (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
                                 (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")] {
            let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: size)
            previous = chunk.withUnsafeBytes {
                SignatureV4.chunkSignature(signingKey: key, timestamp: "20130524T000000Z", scope: scope, previous: previous, chunk: $0)
            }
            XCTAssertEqual(previous, expected, "chunk of \(size)")
        }
    }

    func testClaimFromAuthorizationHeader() throws {
        let header = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        let claim = try XCTUnwrap(try SignatureV4.claim(method: "GET", headers: HTTPHeaders([("Authorization", header),
                                                                                             ("x-amz-date", "20130524T000000Z")]),
                                                        query: QueryParameters()))
        XCTAssertEqual(claim.scope, scope)
        XCTAssertEqual(claim.signedHeaders, ["host", "range", "x-amz-content-sha256", "x-amz-date"])
        XCTAssertFalse(claim.isPresigned)
        XCTAssertNil(try SignatureV4.claim(method: "GET", headers: HTTPHeaders(), query: QueryParameters()), "anonymous")
        for bad in ["AWS4-HMAC-SHA256 Credential=x", "Basic abc", "AWS4-HMAC-SHA256 Credential=A/2013/us/s3/aws4_request, SignedHeaders=host, Signature=00"] {
            XCTAssertThrowsError(try SignatureV4.claim(method: "GET", headers: HTTPHeaders([("Authorization", bad), ("x-amz-date", "x")]),
                                                       query: QueryParameters()), bad)
        }
        XCTAssertTrue(SignatureV4.matches("F0E8BDB87C964420E857BD35B5D6ED310BD44F0170ABA48DD91039C6036BDB41",
                                          "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"))
        XCTAssertFalse(SignatureV4.matches("00", "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"))
    }

    /// botocore signs a request with a key, a query and odd characters in the path; the
    /// signature computed here must be the one it sent.
    func testAgreesWithBotocore() throws {
        let script = """
        import sys
        try:
            from botocore.auth import S3SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.credentials import Credentials
        except ImportError:
            print("SKIP"); sys.exit(0)
        request = AWSRequest(method="PUT", url="http://127.0.0.1:9000/my-bucket/a%20b/c%2Bd~e?uploads=&x-id=Put%20Object&b=2&a=1",
                             data=b"hello", headers={"Content-Type": "text/plain", "x-amz-meta-Mixed": "  two   spaces "})
        S3SigV4Auth(Credentials("AKID", "SECRET/KEY+"), "s3", "eu-west-1").add_auth(request)
        for name, value in request.headers.items():
            print(name + "\\t" + value)
        """
        let result = try runPython(script)
        try require(!result.hasPrefix("SKIP"), "botocore is not installed (scripts/install-deps --test installs it)")
        var headers: [(String, String)] = [("Host", "127.0.0.1:9000")]
        for line in result.split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            if parts.count == 2 { headers.append((String(parts[0]), String(parts[1]))) }
        }
        let fields = HTTPHeaders(headers)
        let claim = try XCTUnwrap(try SignatureV4.claim(method: "PUT", headers: fields, query: QueryParameters()))
        let query = try QueryParameters(Substring("uploads=&x-id=Put%20Object&b=2&a=1"))
        let canonical = try SignatureV4.canonicalRequest(method: "PUT", path: "/my-bucket/a%20b/c%2Bd~e", query: query, headers: fields,
                                                         signedHeaders: claim.signedHeaders, payloadHash: fields["x-amz-content-sha256"]!)
        let expected = SignatureV4.signature(signingKey: SignatureV4.signingKey(secret: "SECRET/KEY+", scope: claim.scope),
                                             stringToSign: SignatureV4.stringToSign(timestamp: claim.timestamp, scope: claim.scope,
                                                                                    canonicalRequest: canonical))
        XCTAssertEqual(claim.signature, expected, "canonical request:\n\(canonical)")
    }

    private func runPython(_ script: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: output, as: UTF8.self)
    }
}

extension SignatureV4Tests {
    func testTimestamps() {
        XCTAssertEqual(SignatureV4.amzTimestamp("Fri, 24 May 2013 00:00:00 GMT"), "20130524T000000Z")
        XCTAssertNil(SignatureV4.amzTimestamp("yesterday"))
        let date = SignatureV4.date(fromTimestamp: "20130524T013045Z")
        XCTAssertEqual(date?.timeIntervalSince1970, 1_369_359_045)
        XCTAssertEqual(date.map(SignatureV4.timestamp), "20130524T013045Z")
        XCTAssertNil(SignatureV4.date(fromTimestamp: "2013-05-24"))
        XCTAssertNil(SignatureV4.date(fromTimestamp: "20261306T250000Z")) // no 13th month, no 25th hour
    }
}
