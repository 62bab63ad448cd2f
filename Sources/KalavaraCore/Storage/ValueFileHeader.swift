/// The header at the start of every value file: which key and version the bytes belong to,
/// and (from format 2) the value's size and a checksum of its content.
///
/// File names are hashes, so without this a volume could not say which key a file holds;
/// with it, a rebuild can recover the whole index from the files alone, a reader can check
/// that the file it opened really is the key it was asked for, and a scrub can tell a
/// flipped bit from the value.
///
/// Layout (little-endian):
/// - format 1: "KLVA" · 1 · 3 reserved · version (8) · key length (4) · 4 reserved · key.
/// - format 2: "KLVA" · 2 · flags (bit 0: checksum present) · 2 reserved · version (8) ·
///   key length (4) · CRC-32 of the value (4) · value size (8) · key.
/// The value follows immediately. Format 1 files (written before checksums) are still read
/// and served; they count as unverified until they are written again.
public struct ValueFileHeader: Equatable, Sendable {
    static let magic: [UInt8] = Array("KLVA".utf8)
    public static let currentFormat: UInt8 = 2

    let key: Key
    let version: UInt64
    /// 1 or 2.
    let format: UInt8
    /// CRC-32 (zlib) of the value bytes; nil in a format 1 file.
    let checksum: UInt32?
    /// The value's size as written; nil in a format 1 file.
    let size: UInt64?

    public init(key: Key, version: UInt64, checksum: UInt32? = nil, size: UInt64? = nil, format: UInt8 = ValueFileHeader.currentFormat) {
        self.key = key
        self.version = version
        self.format = format
        self.checksum = format == 1 ? nil : checksum
        self.size = format == 1 ? nil : (size ?? 0)
    }

    static func fixedBytes(format: UInt8) -> Int { format == 1 ? 24 : 32 }

    /// Where a format 2 header keeps checksum (4 bytes) then size (8): filled in once the
    /// value has streamed in.
    static let checksumOffset = 20

    /// Bytes before the value.
    var encodedCount: Int { Self.fixedBytes(format: format) + key.bytes.count }

    public func encoded() -> [UInt8] {
        var bytes = Self.magic
        bytes.reserveCapacity(encodedCount)
        bytes.append(format)
        bytes.append(contentsOf: [format == 1 || checksum == nil ? 0 : 1, 0, 0])
        bytes.append(littleEndian: version)
        bytes.append(littleEndian: UInt32(key.bytes.count))
        if format == 1 {
            bytes.append(contentsOf: [0, 0, 0, 0])
        } else {
            bytes.append(littleEndian: checksum ?? 0)
            bytes.append(littleEndian: size ?? 0)
        }
        bytes.append(contentsOf: key.bytes)
        return bytes
    }

    /// Decodes a header from the first bytes of a file; nil if they are not one.
    static func decode(_ bytes: [UInt8]) -> ValueFileHeader? {
        guard bytes.count >= 24, Array(bytes[0..<4]) == magic, bytes[4] == 1 || bytes[4] == 2 else { return nil }
        let format = bytes[4]
        let fixed = fixedBytes(format: format)
        let version = bytes.readLittleEndian(UInt64.self, at: 8)
        let keyLength = Int(bytes.readLittleEndian(UInt32.self, at: 16))
        guard keyLength >= 1, keyLength <= Key.maxBytes, bytes.count >= fixed + keyLength,
              let key = try? Key(Array(bytes[fixed..<(fixed + keyLength)])) else { return nil }
        guard format == 2 else { return ValueFileHeader(key: key, version: version, format: 1) }
        let hasChecksum = bytes[5] & 1 == 1
        // A size no file can have is a damaged header, not a value.
        guard bytes.readLittleEndian(UInt64.self, at: checksumOffset + 4) <= UInt64(Int.max) else { return nil }
        return ValueFileHeader(key: key, version: version,
                               checksum: hasChecksum ? bytes.readLittleEndian(UInt32.self, at: checksumOffset) : nil,
                               size: bytes.readLittleEndian(UInt64.self, at: checksumOffset + 4), format: 2)
    }

    /// How many bytes to read to be sure to hold any header.
    static let maxEncodedBytes = 32 + Key.maxBytes
}

extension Array where Element == UInt8 {
    mutating func append<T: FixedWidthInteger>(littleEndian value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    func readLittleEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(self[offset + i]) << (8 * i) }
        return value
    }
}
