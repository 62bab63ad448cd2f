/// The header at the start of every value file: which key and version the bytes belong to.
///
/// File names are hashes, so without this a volume could not say which key a file holds;
/// with it, a rebuild can recover the whole index from the files alone, and a reader can
/// check that the file it opened really is the key it was asked for.
///
/// Layout (little-endian): "KLVA" · format (1 byte) · 3 reserved · version (8) ·
/// key length (4) · 4 reserved · key bytes. The value follows immediately.
public struct ValueFileHeader: Equatable, Sendable {
    static let magic: [UInt8] = Array("KLVA".utf8)
    static let format: UInt8 = 1
    static let fixedBytes = 24

    public let key: Key
    public let version: UInt64

    public init(key: Key, version: UInt64) {
        self.key = key
        self.version = version
    }

    /// Bytes before the value.
    public var encodedCount: Int { Self.fixedBytes + key.bytes.count }

    public func encoded() -> [UInt8] {
        var bytes = Self.magic
        bytes.append(Self.format)
        bytes.append(contentsOf: [0, 0, 0])
        bytes.append(littleEndian: version)
        bytes.append(littleEndian: UInt32(key.bytes.count))
        bytes.append(contentsOf: [0, 0, 0, 0])
        bytes.append(contentsOf: key.bytes)
        return bytes
    }

    /// Decodes a header from the first bytes of a file; nil if they are not one.
    public static func decode(_ bytes: [UInt8]) -> ValueFileHeader? {
        guard bytes.count >= fixedBytes, Array(bytes[0..<4]) == magic, bytes[4] == format else { return nil }
        let version = bytes.readLittleEndian(UInt64.self, at: 8)
        let keyLength = Int(bytes.readLittleEndian(UInt32.self, at: 16))
        guard keyLength >= 1, keyLength <= Key.maxBytes, bytes.count >= fixedBytes + keyLength,
              let key = try? Key(Array(bytes[fixedBytes..<(fixedBytes + keyLength)])) else { return nil }
        return ValueFileHeader(key: key, version: version)
    }

    /// How many bytes to read to be sure to hold any header.
    static let maxEncodedBytes = fixedBytes + Key.maxBytes
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
