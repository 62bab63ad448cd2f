/// A `Range: bytes=...` request header (RFC 9110 §14.2), single ranges only.
public enum ByteRange: Equatable, Sendable {
    case satisfiable(Range<Int>)
    case unsatisfiable
    /// Not a single byte range we understand (multiple ranges, other units, bad syntax):
    /// RFC 9110 lets a server ignore it and send the whole value.
    case ignored

    public static func parse(_ header: String, size: Int) -> ByteRange {
        let text = header.trimmingHTTPWhitespace()
        guard text.hasPrefix("bytes="), !text.contains(",") else { return .ignored }
        let spec = text.dropFirst("bytes=".count)
        guard let dash = spec.firstIndex(of: "-") else { return .ignored }
        let first = spec[..<dash], last = spec[spec.index(after: dash)...]
        func number(_ digits: Substring) -> Int? {
            guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return Int(digits)
        }
        if first.isEmpty { // suffix: the last N bytes
            guard let count = number(last) else { return .ignored }
            guard count > 0, size > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, size - count)..<size)
        }
        guard let start = number(first) else { return .ignored }
        let end: Int
        if last.isEmpty {
            end = size - 1
        } else {
            guard let value = number(last), value >= start else { return .ignored }
            end = min(value, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .satisfiable(start..<(end + 1))
    }
}
