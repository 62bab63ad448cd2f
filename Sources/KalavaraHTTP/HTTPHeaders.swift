import KalavaraSupport
/// Header fields of one message, in the order received.
///
/// Names are compared case-insensitively (RFC 9110 §5.1). A message has few headers, so a
/// linear scan beats any hashing here.
public struct HTTPHeaders: Sequence, Sendable {
    public private(set) var fields: [(name: String, value: String)] = []

    public init() {}
    public init(_ fields: [(String, String)]) {
        self.fields = fields.map { (name: $0.0, value: $0.1) }
    }

    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    /// Replaces every field named `name` with one field.
    public mutating func set(_ name: String, _ value: String) {
        fields.removeAll { $0.name.caseInsensitiveEquals(name) }
        fields.append((name, value))
    }

    /// The first value of `name`, if any.
    public subscript(name: String) -> String? {
        for field in fields where field.name.caseInsensitiveEquals(name) { return field.value }
        return nil
    }

    /// Every value of `name`, with comma-separated list elements split apart and trimmed.
    public func listValues(_ name: String) -> [String] {
        var result: [String] = []
        for field in fields where field.name.caseInsensitiveEquals(name) {
            for element in field.value.split(separator: ",") {
                let trimmed = element.trimmingHTTPWhitespace()
                if !trimmed.isEmpty { result.append(trimmed) }
            }
        }
        return result
    }

    func contains(_ name: String) -> Bool { self[name] != nil }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> {
        fields.makeIterator()
    }
}

extension StringProtocol {
    /// ASCII case-insensitive comparison, without allocating lowercased copies.
    func caseInsensitiveEquals<Other: StringProtocol>(_ other: Other) -> Bool {
        let a = utf8, b = other.utf8
        guard a.count == b.count else { return false }
        for (x, y) in zip(a, b) where x != y {
            let lx = (x >= 65 && x <= 90) ? x + 32 : x
            let ly = (y >= 65 && y <= 90) ? y + 32 : y
            if lx != ly { return false }
        }
        return true
    }

    /// Drops spaces and tabs at both ends (HTTP's "OWS").
    public func trimmingHTTPWhitespace() -> String {
        let bytes = Array(utf8)
        var start = 0, end = bytes.count
        while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }
}
