/// Byte constants and character classes from RFC 9110 §5.6.
public enum ASCII {
    public static let tab: UInt8 = 0x09, lf: UInt8 = 0x0A, cr: UInt8 = 0x0D, space: UInt8 = 0x20
    public static let dot: UInt8 = 0x2E, colon: UInt8 = 0x3A, semicolon: UInt8 = 0x3B
    public static let zero: UInt8 = 0x30, one: UInt8 = 0x31, nine: UInt8 = 0x39, del: UInt8 = 0x7F
    public static let percent: UInt8 = 0x25, slash: UInt8 = 0x2F, question: UInt8 = 0x3F

    /// tchar: the characters allowed in methods and header names.
    @usableFromInline static let tokenTable: [Bool] = {
        var table = [Bool](repeating: false, count: 256)
        for byte in UInt8(0x30)...0x39 { table[Int(byte)] = true }
        for byte in UInt8(0x41)...0x5A { table[Int(byte)] = true }
        for byte in UInt8(0x61)...0x7A { table[Int(byte)] = true }
        for byte in "!#$%&'*+-.^_`|~".utf8 { table[Int(byte)] = true }
        return table
    }()

    @inlinable public static func isTokenByte(_ byte: UInt8) -> Bool { tokenTable[Int(byte)] }

    @inlinable public static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        case 0x61...0x66: return byte - 0x61 + 10
        default: return nil
        }
    }
}
