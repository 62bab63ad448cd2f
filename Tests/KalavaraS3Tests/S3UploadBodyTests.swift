import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraS3
@testable import KalavaraSupport
import XCTest

/// The S3 gateway's upload body decoder fed the same bytes cut into reads every way the
/// network may cut them: at each single split point, and in random multi-splits down to one
/// byte a read. A read that ends exactly at the end of a chunk's data once broke the
/// aws-chunked framing parser (issue 21), so no framing may depend on where reads end.
final class S3UploadBodyTests: XCTestCase {
    /// Hands out pre-cut pieces, one (or part of one) per read.
    final class Pieces: ByteSource {
        private var pieces: [[UInt8]]
        init(_ pieces: [[UInt8]]) { self.pieces = pieces.filter { !$0.isEmpty } }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            guard !pieces.isEmpty else { return 0 }
            let count = min(buffer.count, pieces[0].count)
            pieces[0].withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: count) }
            pieces[0].removeFirst(count)
            if pieces[0].isEmpty { pieces.removeFirst() }
            return count
        }
    }

    /// One way to send `object`: the request's headers, its payload mode and its body bytes.
    struct Upload {
        let name: String
        let headers: [(String, String)]
        let payload: S3Authenticator.Payload
        let body: [UInt8]
        var object: [UInt8] = S3UploadBodyTests.object
    }

    static let object = Array("The quick brown fox jumps over the lazy dog, twice over.".utf8)
    static let chunkSizes = [16, 16, 16, 8]
    static let scope = SignatureV4.Scope(accessKey: "key", date: "20261206", region: "us-east-1")
    static let timestamp = "20261206T100000Z"
    static let signingKey = SignatureV4.signingKey(secret: "secret", scope: scope)
    static let seed = String(repeating: "ab", count: 32)

    static func chunks(of object: [UInt8], sizes: [Int]) -> [[UInt8]] {
        var start = 0
        return sizes.map { size in
            defer { start += size }
            return Array(object[start..<(start + size)])
        }
    }

    static func crc32(_ object: [UInt8] = object) -> String {
        var crc = CRC32()
        object.withUnsafeBytes { crc.update($0) }
        let value = crc.value
        return Data([UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)])
            .base64EncodedString()
    }

    /// aws-chunked framing with chunk signatures (when `signed`) and a trailer (when `trailer`).
    static func awsChunked(signed: Bool, trailer: Bool, object: [UInt8] = object, chunkSizes: [Int] = chunkSizes) -> Upload {
        var body: [UInt8] = []
        var previous = seed
        for chunk in chunks(of: object, sizes: chunkSizes) + [[]] {
            var line = String(chunk.count, radix: 16)
            if signed {
                previous = chunk.withUnsafeBytes {
                    SignatureV4.chunkSignature(signingKey: signingKey, timestamp: timestamp, scope: scope, previous: previous, chunk: $0)
                }
                line += ";chunk-signature=\(previous)"
            }
            body += Array((line + "\r\n").utf8) + chunk
            if !chunk.isEmpty { body += Array("\r\n".utf8) }
        }
        var headers = [("Host", "s3"), ("Content-Encoding", "aws-chunked"),
                       ("x-amz-decoded-content-length", String(object.count))]
        if trailer {
            headers.append(("x-amz-trailer", "x-amz-checksum-crc32"))
            let trailerLine = "x-amz-checksum-crc32:\(crc32(object))"
            body += Array((trailerLine + "\r\n").utf8)
            if signed {
                let text = "AWS4-HMAC-SHA256-TRAILER\n\(timestamp)\n\(scope.text)\n\(previous)\n" + SHA256.hex(Array((trailerLine + "\n").utf8))
                body += Array("x-amz-trailer-signature:\(SignatureV4.signature(signingKey: signingKey, stringToSign: text))\r\n".utf8)
            }
        }
        body += Array("\r\n".utf8)
        headers.append(("Content-Length", String(body.count)))
        let signing = signed ? S3Authenticator.ChunkSigning(signingKey: signingKey, timestamp: timestamp, scope: scope, seed: seed) : nil
        let name = (signed ? "signed" : "unsigned") + (trailer ? " aws-chunked with trailer" : " aws-chunked")
        return Upload(name: name, headers: headers, payload: .awsChunked(signing: signing, trailer: trailer), body: body, object: object)
    }

    /// Chunks of 64 KiB and odd sizes around it: the decoder's 64 KiB buffer fills, and
    /// framing lines straddle its end, so it must move what it holds (`fillRaw`'s memmove).
    static let large: [Upload] = {
        var generator = SplitMix64(seed: 21)
        let object = (0..<200_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let sizes = [65_530, 65_536, 3, 65_000, 3_931]
        return [awsChunked(signed: true, trailer: false, object: object, chunkSizes: sizes),
                awsChunked(signed: false, trailer: true, object: object, chunkSizes: sizes),
                awsChunked(signed: true, trailer: true, object: object, chunkSizes: sizes)]
    }()

    static let uploads: [Upload] = [
        awsChunked(signed: true, trailer: false),
        awsChunked(signed: false, trailer: true),
        awsChunked(signed: true, trailer: true),
        Upload(name: "plain", headers: [("Host", "s3"), ("Content-Length", String(object.count)), ("x-amz-checksum-crc32", crc32())],
               payload: .sha256(SHA256.hex(object)), body: object),
    ]

    /// Decodes `pieces` as `upload` with reads of at most `readSize` bytes.
    func decode(_ upload: Upload, _ pieces: [[UInt8]], readSize: Int) throws -> [UInt8] {
        let request = try HTTPRequest(method: "PUT", target: "/bucket/key", minorVersion: 1, headers: HTTPHeaders(upload.headers))
        let decoder = try S3UploadBody(request, Pieces(pieces), payload: upload.payload)
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: readSize)
        while true {
            let count = try buffer.withUnsafeMutableBytes { try decoder.read(into: $0) }
            if count == 0 { break }
            result += buffer[0..<count]
        }
        try decoder.finish()
        return result
    }

    func testEverySingleSplitPoint() throws {
        for upload in Self.uploads {
            XCTAssertEqual(try decode(upload, [upload.body], readSize: 64 * 1024), Self.object, upload.name)
            for split in 1..<upload.body.count {
                for readSize in [7, 64 * 1024] {
                    let pieces = [Array(upload.body[..<split]), Array(upload.body[split...])]
                    XCTAssertNoThrow(XCTAssertEqual(try decode(upload, pieces, readSize: readSize), Self.object),
                                     "\(upload.name), split at \(split), reads of \(readSize)")
                }
            }
        }
    }

    func testRandomMultiSplitsAndOneByteReads() throws {
        // Seeded: a failure names its cuts and read size, and the next run repeats it.
        var generator = SplitMix64(seed: 2026_12_06)
        for upload in Self.uploads + Self.large {
            let small = upload.body.count < 4096
            if small {
                let oneByte = upload.body.map { [$0] }
                XCTAssertNoThrow(XCTAssertEqual(try decode(upload, oneByte, readSize: 64 * 1024), upload.object), "\(upload.name), 1-byte reads")
            }
            for _ in 0..<(small ? 300 : 40) {
                var cuts = Set<Int>()
                for _ in 0..<Int.random(in: 2...12, using: &generator) { cuts.insert(Int.random(in: 1..<upload.body.count, using: &generator)) }
                let bounds = [0] + cuts.sorted() + [upload.body.count]
                let pieces = zip(bounds, bounds.dropFirst()).map { Array(upload.body[$0..<$1]) }
                let readSize = small ? Int.random(in: 1...32, using: &generator) : Int.random(in: 1000...70_000, using: &generator)
                XCTAssertNoThrow(XCTAssertEqual(try decode(upload, pieces, readSize: readSize), upload.object),
                                 "\(upload.name) (\(upload.body.count) bytes), cut at \(cuts.sorted()), reads of \(readSize)")
            }
        }
    }

    /// The checks still bite however the bytes arrive: a changed byte, a lost byte.
    func testDamagedBodiesAreStillRefused() throws {
        for upload in Self.uploads {
            var damaged = upload.body
            let at = damaged.firstIndex(of: UInt8(ascii: "q"))!
            damaged[at] = UInt8(ascii: "Q")
            XCTAssertThrowsError(try decode(upload, damaged.map { [$0] }, readSize: 5), upload.name)
            var short = upload.body
            short.remove(at: at)
            XCTAssertThrowsError(try decode(upload, [short], readSize: 5), upload.name)
        }
    }
}
