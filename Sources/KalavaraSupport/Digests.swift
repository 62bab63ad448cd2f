import CLibCrypto
import CZlib
import Synchronization

/// SHA-256, HMAC-SHA256, MD5 and CRC-32 from the system's libraries: OpenSSL's libcrypto
/// (through its EVP interface, which uses the CPU's SHA extensions) and zlib. Chosen over
/// swift-crypto for the clean build time; docs/development.md has the measurements.
///
/// Volumes name value files by the SHA-256 of their key, signatures are HMAC-SHA256, S3
/// ETags are MD5 and S3 checksums CRC-32: all go through here, so nothing else imports C.
public enum SHA256 {
    public static let byteCount = 32

    public static func digest(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { digest($0) }
    }

    static func digest(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        EVPDigest.oneShot(message, Algorithm.sha256.md, byteCount)
    }

    /// The digest as lower-case hex.
    public static func hex(_ message: [UInt8]) -> String { Hex.encode(digest(message)) }

    /// A running SHA-256 over data that arrives in pieces.
    public static func hasher() -> EVPDigest { EVPDigest(Algorithm.sha256.md, byteCount) }
}

/// MD5: S3's ETag for single-part objects. Not for security.
public enum MD5 {
    public static let byteCount = 16
    public static func digest(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { EVPDigest.oneShot($0, Algorithm.md5.md, byteCount) }
    }
    public static func hasher() -> EVPDigest { EVPDigest(Algorithm.md5.md, byteCount) }
}

/// HMAC-SHA256 (RFC 2104): signatures on tickets and internal calls, S3's Signature V4.
public enum HMACSHA256 {
    public static func authenticationCode(key: [UInt8], message: [UInt8]) -> [UInt8] {
        hmac(Algorithm.sha256, SHA256.byteCount, key: key, message: message)
    }

    /// HMAC-SHA1: only S3's legacy Signature V2 (the presigned URLs boto3 makes by default).
    public static func sha1Code(key: [UInt8], message: [UInt8]) -> [UInt8] {
        hmac(Algorithm.sha1, 20, key: key, message: message)
    }

    private static func hmac(_ algorithm: Algorithm, _ byteCount: Int, key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        var length: UInt32 = 0
        key.withUnsafeBytes { keyBytes in
            message.withUnsafeBytes { messageBytes in
                out.withUnsafeMutableBytes { outBytes in
                    _ = HMAC(algorithm.md, keyBytes.baseAddress, Int32(keyBytes.count),
                             messageBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), messageBytes.count,
                             outBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), &length)
                }
            }
        }
        precondition(length == UInt32(byteCount), "HMAC failed")
        return out
    }

    /// Compares two codes in time that does not depend on where they differ.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in CRYPTO_memcmp(x.baseAddress, y.baseAddress, a.count) == 0 } }
    }
}

/// HMAC-SHA256 under one key, keyed once (OpenSSL's EVP_MAC): what the cluster secret signs
/// with on every redirect and internal call. Shared by all threads; each code works on a
/// duplicate of the keyed context.
public final class KeyedHMACSHA256: @unchecked Sendable {
    private let context: OpaquePointer
    /// Tells each thread's working copy which keyed context it was made from.
    private let id: UInt64
    private static let ids = Atomic<UInt64>(0)

    public init(key: [UInt8]) {
        id = Self.ids.add(1, ordering: .relaxed).newValue
        guard let context = key.withUnsafeBufferPointer({ kalavara_hmac_sha256_keyed($0.baseAddress, $0.count) }) else {
            fatalError("libcrypto cannot key HMAC-SHA256")
        }
        self.context = context
    }

    deinit { EVP_MAC_CTX_free(context) }

    func authenticationCode(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: SHA256.byteCount)
        let ok = out.withUnsafeMutableBufferPointer { kalavara_hmac_sha256(context, id, message.baseAddress, message.count, $0.baseAddress) }
        precondition(ok == 1, "HMAC-SHA256 failed")
        return out
    }

    public func authenticationCode(_ message: [UInt8]) -> [UInt8] { message.withUnsafeBytes { authenticationCode($0) } }
}

/// CRC-32 (the zlib/IEEE polynomial), running or one-shot.
public struct CRC32: Sendable {
    public private(set) var value: UInt32 = 0
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var offset = 0
        while offset < bytes.count { // zlib takes a 32-bit length
            let count = min(bytes.count - offset, Int(UInt32.max))
            value = UInt32(crc32(UInt(value), base.advanced(by: offset).assumingMemoryBound(to: UInt8.self), UInt32(count)))
            offset += count
        }
    }
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc = CRC32()
        bytes.withUnsafeBytes { crc.update($0) }
        return crc.value
    }
}

/// SHA-1: only to check an S3 client's `x-amz-checksum-sha1`.
public enum SHA1 {
    public static func hasher() -> EVPDigest { EVPDigest(Algorithm.sha1.md, 20) }
}

/// CRC-32C (Castagnoli), for an S3 client's `x-amz-checksum-crc32c`: neither zlib nor
/// libcrypto has it, and clients send it only when asked, so a table does.
public struct CRC32C: Sendable {
    private var state: UInt32 = 0xFFFF_FFFF
    public init() {}
    public var value: UInt32 { state ^ 0xFFFF_FFFF }

    private static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var crc = state
        Self.table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        state = crc
    }
}

/// A digest implementation fetched from OpenSSL once. `EVP_sha256()` makes OpenSSL 3 look
/// the implementation up again on every call, which tripled the cost of hashing a key
/// (about 480 against 170 ns for 64 bytes); a fetched one is shared, read-only, by all
/// threads.
struct Algorithm: @unchecked Sendable {
    let md: OpaquePointer

    private init(_ name: String) {
        guard let md = EVP_MD_fetch(nil, name, nil) else { fatalError("libcrypto has no \(name)") }
        self.md = md
    }

    static let sha256 = Algorithm("SHA256")
    static let md5 = Algorithm("MD5")
    static let sha1 = Algorithm("SHA1")
}

/// An EVP message digest context: one hash computed over pieces. Not shared between threads.
public final class EVPDigest {
    private let context: OpaquePointer
    private let byteCount: Int

    init(_ type: OpaquePointer, _ byteCount: Int) {
        context = EVP_MD_CTX_new()!
        self.byteCount = byteCount
        precondition(EVP_DigestInit_ex(context, type, nil) == 1, "EVP_DigestInit_ex failed")
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        EVP_DigestUpdate(context, bytes.baseAddress, bytes.count)
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The digest of everything given so far; the context cannot be used afterwards.
    public func finish() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        var length: UInt32 = 0
        out.withUnsafeMutableBufferPointer { _ = EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
        return out
    }

    static func oneShot(_ message: UnsafeRawBufferPointer, _ type: OpaquePointer, _ byteCount: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        var length: UInt32 = 0
        let ok = out.withUnsafeMutableBufferPointer {
            EVP_Digest(message.baseAddress, message.count, $0.baseAddress, &length, type, nil)
        }
        precondition(ok == 1 && Int(length) == byteCount, "EVP_Digest failed")
        return out
    }
}

/// Lower-case hexadecimal.
public enum Hex {
    /// Written straight into the string's storage: a volume names the file of every read
    /// by the hex of its key's hash, and an array in between cost 1,700 instructions a GET.
    public static func encode(_ bytes: [UInt8]) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            var index = 0
            for byte in bytes {
                out[index] = hexDigit(byte >> 4)
                out[index + 1] = hexDigit(byte & 0xF)
                index += 2
            }
            return index
        }
    }

    @inline(__always) private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") - 10 + nibble
    }

    public static func decode<Text: StringProtocol>(_ text: Text) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        for i in stride(from: 0, to: chars.count, by: 2) {
            guard let high = ASCII.hexValue(chars[i]), let low = ASCII.hexValue(chars[i + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }
}
