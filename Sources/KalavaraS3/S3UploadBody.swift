import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// The body of an S3 upload as the client sends it, decoded and checked while it streams:
/// plain or `aws-chunked` (every chunk signature in the chain checked, then the trailer),
/// with the SHA-256 it was signed with, its `Content-MD5` and its `x-amz-checksum-*`
/// computed on the way. `read` gives the object's bytes; `finish` reads what follows the
/// last of them and throws unless every check holds, so the caller can hold back the
/// object's last byte from the store until it has (see `S3Gateway.store`).
final class S3UploadBody {
    /// The object's length: `x-amz-decoded-content-length` for aws-chunked, else
    /// `Content-Length`; nil for a plain `Transfer-Encoding: chunked` body (known at its end).
    let length: Int?
    private let body: any ByteSource
    private let chunked: Bool
    private let signing: S3Authenticator.ChunkSigning?
    private let expectsTrailer: Bool
    private var sha256: (hasher: EVPDigest, expected: String)?
    private var contentMD5: (hasher: EVPDigest, expected: [UInt8])?
    private var checksum: Checksum?
    private(set) var delivered = 0

    // aws-chunked decoding: a buffer of raw bytes read from `body`.
    private var raw = [UInt8](repeating: 0, count: 64 * 1024)
    private var rawStart = 0, rawEnd = 0
    private var chunkLeft = 0
    private var chunkHasher: EVPDigest?
    private var chunkSignature = ""
    private var previousSignature = ""
    private var sawFinalChunk = false

    init(_ request: HTTPRequest, _ body: any ByteSource, payload: S3Authenticator.Payload) throws {
        self.body = body
        let headers = request.headers
        let encodings = headers.listValues("Content-Encoding").map { $0.lowercased() }
        switch payload {
        case .awsChunked(let signing, let trailer):
            chunked = true
            self.signing = signing
            expectsTrailer = trailer
            previousSignature = signing?.seed ?? ""
        case .sha256(let expected):
            // `Content-Encoding: aws-chunked` alone does not frame the body (boto3 passes a
            // user's value through): only with the decoded length does it.
            chunked = encodings.contains("aws-chunked") && headers["x-amz-decoded-content-length"] != nil
            signing = nil
            expectsTrailer = false
            sha256 = (SHA256.hasher(), expected)
        case .unchecked:
            chunked = encodings.contains("aws-chunked") && headers["x-amz-decoded-content-length"] != nil
            signing = nil
            expectsTrailer = headers["x-amz-trailer"] != nil
        }
        if chunked {
            guard let text = headers["x-amz-decoded-content-length"], let decoded = Int(text), decoded >= 0 else {
                throw S3Error(411, "MissingContentLength", "an aws-chunked upload needs x-amz-decoded-content-length")
            }
            length = decoded
        } else {
            switch request.framing {
            case .length(let count): length = count
            case .none: length = 0
            case .chunked:
                length = headers["x-amz-decoded-content-length"].flatMap(Int.init)
            case .untilClose:
                throw S3Error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
            }
        }
        if let md5 = headers["Content-MD5"] {
            guard let expected = Data(base64Encoded: md5.trimmingHTTPWhitespace()).map(Array.init), expected.count == 16 else {
                throw S3Error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
            }
            contentMD5 = (MD5.hasher(), expected)
        }
        checksum = try Checksum(headers)
    }

    /// The object's bytes, up to `buffer.count`; 0 once all `length` bytes have come.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let wanted = min(buffer.count, (length ?? Int.max) - delivered)
        guard wanted > 0 else { return 0 }
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<wanted])
        let count = chunked ? try readChunked(into: target) : try body.read(into: target)
        if count == 0, length == nil { return 0 }
        guard count > 0 else { throw S3Error(400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header") }
        let piece = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
        sha256?.hasher.update(piece)
        contentMD5?.hasher.update(piece)
        checksum?.update(piece)
        delivered += count
        return count
    }

    /// After the last byte: reads the rest of the framing and checks everything. Throws
    /// the S3 error the client is owed if any check fails.
    func finish() throws {
        if chunked {
            if !sawFinalChunk {
                guard chunkLeft == 0 else { throw S3Error(400, "IncompleteBody", "the body ended inside a chunk") }
                try closeChunkIfEnded()
                try readChunkHeader()
                guard sawFinalChunk else { throw S3Error(400, "IncompleteBody", "the body has more data than x-amz-decoded-content-length") }
            }
            try readTrailers()
        } else if length != nil {
            var scratch = [UInt8](repeating: 0, count: 1)
            let more = try scratch.withUnsafeMutableBytes { try body.read(into: $0) }
            guard more == 0 else { throw S3Error(400, "IncompleteBody", "the body is longer than Content-Length") }
        }
        if let (hasher, expected) = sha256, Hex.encode(hasher.finish()) != expected {
            throw S3Error(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
        }
        if let (hasher, expected) = contentMD5, hasher.finish() != expected {
            throw S3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
        }
        try checksum?.verify()
    }

    // MARK: aws-chunked

    private func fillRaw() throws -> Bool {
        if rawStart == rawEnd { rawStart = 0; rawEnd = 0 }
        if rawEnd == raw.count {
            guard rawStart > 0 else { return false }
            raw.withUnsafeMutableBytes { buffer in
                _ = memmove(buffer.baseAddress!, buffer.baseAddress! + rawStart, rawEnd - rawStart)
            }
            rawEnd -= rawStart
            rawStart = 0
        }
        let count = try raw.withUnsafeMutableBytes { buffer in
            try body.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[rawEnd...]))
        }
        rawEnd += count
        return count > 0
    }

    /// A CRLF-terminated line of the aws-chunked framing, without its CRLF, at most `limit`
    /// bytes before its LF. The line may arrive in any number of reads, and `fillRaw` moves
    /// what is buffered to the front of `raw` to make room: so the scan keeps its place as a
    /// count from `rawStart`, never as an index into `raw`, which a fill would invalidate.
    private func readLine(limit: Int = 4096) throws -> String {
        var scanned = 0
        while true {
            while rawStart + scanned < rawEnd, raw[rawStart + scanned] != ASCII.lf { scanned += 1 }
            if rawStart + scanned < rawEnd {
                guard scanned <= limit else { throw S3Error(400, "InvalidRequest", "aws-chunked framing line too long") }
                var end = rawStart + scanned
                if end > rawStart, raw[end - 1] == ASCII.cr { end -= 1 }
                let line = String(decoding: raw[rawStart..<end], as: UTF8.self)
                rawStart += scanned + 1
                return line
            }
            guard scanned <= limit else { throw S3Error(400, "InvalidRequest", "aws-chunked framing line too long") }
            guard try fillRaw() else { throw S3Error(400, "IncompleteBody", "the body ended inside its aws-chunked framing") }
        }
    }

    private func readChunkHeader() throws {
        let line = try readLine()
        let parts = line.split(separator: ";", maxSplits: 1)
        guard let sizeText = parts.first, let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0,
              size <= 1 << 40 else {
            throw S3Error(400, "InvalidRequest", "unreadable aws-chunked chunk size")
        }
        if signing != nil {
            guard parts.count == 2, parts[1].hasPrefix("chunk-signature=") else {
                throw S3Error(403, "SignatureDoesNotMatch", "an aws-chunked chunk without its chunk-signature")
            }
            chunkSignature = String(parts[1].dropFirst("chunk-signature=".count))
            chunkHasher = SHA256.hasher()
        }
        chunkLeft = size
        if size == 0 {
            try checkChunkSignature()
            sawFinalChunk = true
        }
    }

    private func checkChunkSignature() throws {
        guard let signing, let hasher = chunkHasher else { return }
        chunkHasher = nil
        let text = "AWS4-HMAC-SHA256-PAYLOAD\n\(signing.timestamp)\n\(signing.scope.text)\n\(previousSignature)\n"
            + "\(SignatureV4.emptyHash)\n\(Hex.encode(hasher.finish()))"
        let expected = SignatureV4.signature(signingKey: signing.signingKey, stringToSign: text)
        guard SignatureV4.matches(chunkSignature, expected) else {
            throw S3Error(403, "SignatureDoesNotMatch", "an aws-chunked chunk's signature does not match its data")
        }
        previousSignature = expected
    }

    /// Whether the chunk last started had data whose closing CRLF is still to be read.
    private var inChunk = false

    /// At the end of a chunk's data: its CRLF, then its signature.
    private func closeChunkIfEnded() throws {
        guard inChunk, chunkLeft == 0 else { return }
        inChunk = false
        let line = try readLine(limit: 2)
        guard line.isEmpty else { throw S3Error(400, "InvalidRequest", "aws-chunked chunk longer than its size") }
        try checkChunkSignature()
    }

    private func readChunked(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            if sawFinalChunk { return 0 }
            if chunkLeft == 0 {
                try closeChunkIfEnded()
                try readChunkHeader()
                inChunk = chunkLeft > 0
                continue
            }
            if rawStart == rawEnd, !(try fillRaw()) {
                throw S3Error(400, "IncompleteBody", "the body ended inside an aws-chunked chunk")
            }
            let count = min(chunkLeft, rawEnd - rawStart, buffer.count)
            raw.withUnsafeBytes { source in
                buffer.baseAddress!.copyMemory(from: source.baseAddress! + rawStart, byteCount: count)
            }
            chunkHasher?.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            rawStart += count
            chunkLeft -= count
            return count
        }
    }

    private func readTrailers() throws {
        guard expectsTrailer else {
            // The last chunk's CRLF (some clients omit it; the body may simply end).
            if rawStart < rawEnd || (try? fillRaw()) == true { _ = try readLine(limit: 2) }
            return
        }
        var trailerText = ""
        var trailerSignature: String?
        while true {
            let line = try readLine()
            if line.isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else { throw S3Error(400, "InvalidRequest", "unreadable trailer line") }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name == "x-amz-trailer-signature" {
                trailerSignature = value
            } else {
                trailerText += "\(name):\(value)\n"
                if name.hasPrefix("x-amz-checksum-") { try checksum?.setExpected(name: name, value: value) }
            }
        }
        if let signing {
            guard let trailerSignature else { throw S3Error(403, "SignatureDoesNotMatch", "the trailer has no x-amz-trailer-signature") }
            let text = "AWS4-HMAC-SHA256-TRAILER\n\(signing.timestamp)\n\(signing.scope.text)\n\(previousSignature)\n"
                + SHA256.hex(Array(trailerText.utf8))
            let expected = SignatureV4.signature(signingKey: signing.signingKey, stringToSign: text)
            guard SignatureV4.matches(trailerSignature, expected) else {
                throw S3Error(403, "SignatureDoesNotMatch", "the trailer's signature does not match")
            }
        }
    }
}

/// An `x-amz-checksum-*` a client sent, in a header or announced in `x-amz-trailer`:
/// CRC32, CRC32C, SHA1 or SHA256, computed while the body streams and compared at its end.
/// Other algorithms (CRC64NVME) are accepted unchecked.
struct Checksum {
    enum Algorithm: String {
        case crc32, crc32c, sha1, sha256
    }

    let algorithm: Algorithm
    private var expected: String?
    private var crc = CRC32()
    private var crcC = CRC32C()
    private var digest: EVPDigest?

    init?(_ headers: HTTPHeaders) throws {
        var found: (Algorithm, String?)?
        for field in headers.fields {
            let name = field.name.lowercased()
            guard name.hasPrefix("x-amz-checksum-"), let algorithm = Algorithm(rawValue: String(name.dropFirst("x-amz-checksum-".count))) else { continue }
            found = (algorithm, field.value.trimmingHTTPWhitespace())
        }
        if found == nil, let trailer = headers["x-amz-trailer"]?.lowercased(), trailer.hasPrefix("x-amz-checksum-"),
           let algorithm = Algorithm(rawValue: String(trailer.dropFirst("x-amz-checksum-".count))) {
            found = (algorithm, nil)
        }
        guard let (algorithm, expected) = found else { return nil }
        self.algorithm = algorithm
        self.expected = expected
        switch algorithm {
        case .sha1: digest = SHA1.hasher()
        case .sha256: digest = SHA256.hasher()
        case .crc32, .crc32c: break
        }
    }

    mutating func setExpected(name: String, value: String) throws {
        guard name == "x-amz-checksum-\(algorithm.rawValue)" else { return }
        expected = value
    }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        switch algorithm {
        case .crc32: crc.update(bytes)
        case .crc32c: crcC.update(bytes)
        case .sha1, .sha256: digest?.update(bytes)
        }
    }

    /// The value S3 would answer: base64 of the big-endian checksum or the digest.
    mutating func computed() -> String {
        func bigEndian(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
        switch algorithm {
        case .crc32: return Data(bigEndian(crc.value)).base64EncodedString()
        case .crc32c: return Data(bigEndian(crcC.value)).base64EncodedString()
        case .sha1, .sha256: return Data(digest?.finish() ?? []).base64EncodedString()
        }
    }

    mutating func verify() throws {
        guard let expected else {
            throw S3Error(400, "InvalidRequest", "x-amz-trailer announced x-amz-checksum-\(algorithm.rawValue) but the trailer did not carry it")
        }
        guard computed() == expected else {
            throw S3Error(400, "BadDigest", "The \(algorithm.rawValue.uppercased()) you specified did not match the calculated checksum.")
        }
    }
}
