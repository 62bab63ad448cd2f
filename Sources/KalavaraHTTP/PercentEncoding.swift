import KalavaraSupport
/// Percent-encoding (RFC 3986 §2.1) for paths and queries.
public enum PercentEncoding {
    /// Decodes `%XX` escapes. Returns nil for a `%` not followed by two hex digits.
    /// `+` stays `+`: it means a space only in HTML forms, not in URLs.
    /// Inlinable, so that other modules (a key from a volume's path, on every request) get
    /// it specialized: unspecialized it cost 1,500 instructions a GET.
    @inlinable
    public static func decode<Bytes: Collection>(_ bytes: Bytes) -> [UInt8]? where Bytes.Element == UInt8 {
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let byte = bytes[index]
            index = bytes.index(after: index)
            guard byte == ASCII.percent else { result.append(byte); continue }
            guard index != bytes.endIndex, let high = ASCII.hexValue(bytes[index]) else { return nil }
            index = bytes.index(after: index)
            guard index != bytes.endIndex, let low = ASCII.hexValue(bytes[index]) else { return nil }
            index = bytes.index(after: index)
            result.append(high << 4 | low)
        }
        return result
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    /// Encodes every byte except unreserved ones (`A-Z a-z 0-9 - _ ~`) and, when
    /// `keepSlashes`, `/`. Dots are always encoded, so `..` can never act as a dot segment
    /// in a client that normalises paths.
    public static func encode(_ bytes: [UInt8], keepSlashes: Bool = false) -> String {
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count * 3)
        for byte in bytes {
            switch byte {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x2D, 0x5F, 0x7E:
                result.append(byte)
            case ASCII.slash where keepSlashes:
                result.append(byte)
            default:
                result.append(ASCII.percent)
                result.append(hexDigits[Int(byte >> 4)])
                result.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: result, as: UTF8.self)
    }

    public static func encode(_ text: String) -> String { encode(Array(text.utf8)) }
}

/// The parameters of a query string, percent-decoded, in order.
public struct QueryParameters: Sendable {
    public private(set) var pairs: [(name: String, value: [UInt8])] = []

    public init() {}

    /// Parses `a=1&b=2`. A malformed escape is a 400, as the client sent something unreadable.
    public init(_ query: Substring?) throws {
        guard let query, !query.isEmpty else { return }
        for part in query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let equals = part.firstIndex(of: UInt8(ascii: "="))
            let rawName = equals.map { part[part.startIndex..<$0] } ?? part[...]
            let rawValue = equals.map { part[part.index(after: $0)...] } ?? part[part.endIndex...]
            guard let name = PercentEncoding.decode(rawName), let value = PercentEncoding.decode(rawValue) else {
                throw HTTPError(400, "invalid percent-encoding in query")
            }
            pairs.append((String(decoding: name, as: UTF8.self), value))
        }
    }

    public subscript(name: String) -> String? {
        bytes(name).map { String(decoding: $0, as: UTF8.self) }
    }

    public func bytes(_ name: String) -> [UInt8]? {
        pairs.first(where: { $0.name == name })?.value
    }

    public mutating func add(_ name: String, _ value: String) { pairs.append((name, Array(value.utf8))) }
    public mutating func add(_ name: String, bytes: [UInt8]) { pairs.append((name, bytes)) }

    /// `name=value&...`, every byte outside the unreserved set escaped.
    public var encoded: String {
        pairs.map { PercentEncoding.encode($0.name) + "=" + PercentEncoding.encode($0.value) }
            .joined(separator: "&")
    }
}

/// A query's parameters looked up by name, percent-decoded: the first pair of that name.
public protocol QueryLookup {
    subscript(name: String) -> String? { get }
}

extension QueryParameters: QueryLookup {}

/// A query string read in place, for a hot path: nothing is decoded or allocated but the
/// values asked for. A volume reads the ticket of every GET from its query, and
/// `QueryParameters`, which decodes every pair into a `String` and an array first, cost
/// 7,600 instructions a GET. Answers as `QueryParameters` does, a malformed escape anywhere
/// in the query included (a 400).
public struct QueryView: QueryLookup, Sendable {
    private let query: Substring

    public init(_ query: Substring?) throws {
        self.query = query ?? ""
        guard Self.escapesAreValid(self.query.utf8) else { throw HTTPError(400, "invalid percent-encoding in query") }
    }

    public subscript(name: String) -> String? {
        if let found = query.utf8.withContiguousStorageIfAvailable({ Self.value(of: name, in: $0) }) { return found }
        return (try? QueryParameters(query))?[name]
    }

    private static func value(of name: String, in query: UnsafeBufferPointer<UInt8>) -> String? {
        var start = 0
        while start < query.count {
            var end = start, equals = start
            while end < query.count, query[end] != UInt8(ascii: "&") { end += 1 }
            while equals < end, query[equals] != UInt8(ascii: "=") { equals += 1 }
            if end > start, decoded(UnsafeBufferPointer(rebasing: query[start..<equals]), equals: name) {
                let value = UnsafeBufferPointer(rebasing: query[min(equals + 1, end)..<end])
                guard value.contains(ASCII.percent) else { return String(decoding: value, as: UTF8.self) }
                return PercentEncoding.decode(value).map { String(decoding: $0, as: UTF8.self) }
            }
            start = end + 1
        }
        return nil
    }

    private static func decoded(_ raw: UnsafeBufferPointer<UInt8>, equals name: String) -> Bool {
        guard raw.contains(ASCII.percent) else { return raw.count == name.utf8.count && raw.elementsEqual(name.utf8) }
        return PercentEncoding.decode(raw)?.elementsEqual(name.utf8) ?? false
    }

    /// Whether every `%` is followed by two hex digits.
    private static func escapesAreValid(_ bytes: Substring.UTF8View) -> Bool {
        var index = bytes.startIndex
        while let percent = bytes[index...].firstIndex(of: ASCII.percent) {
            let digits = bytes[bytes.index(after: percent)...].prefix(2)
            guard digits.count == 2, digits.allSatisfy({ ASCII.hexValue($0) != nil }) else { return false }
            index = digits.endIndex
        }
        return true
    }
}
