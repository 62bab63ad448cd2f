import Foundation
import KalavaraCore

/// The little XML that S3 speaks: answers are written with `S3XML.Writer`; request bodies
/// (CompleteMultipartUpload, Delete, CreateBucketConfiguration) are read with
/// `S3XML.parse` into a tree of elements. No DTDs, no namespaces beyond ignoring prefixes:
/// S3's bodies need neither, and a parser that fetches nothing cannot be made to.
public enum S3XML {
    public static let namespace = "http://s3.amazonaws.com/doc/2006-03-01/"

    /// Escapes text for element content and attribute values.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\r": out += "&#13;"
            default:
                // Control characters other than tab and newline cannot appear in XML 1.0,
                // even escaped; S3 keys with them must be listed with encoding-type=url.
                if scalar.value < 0x20, scalar != "\t", scalar != "\n" { out += "&#\(scalar.value);" } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out
    }

    /// Builds a document: `element("Name") { ... }`, `text("Key", value)`.
    public struct Writer {
        public var text = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"

        public init() {}

        public mutating func element(_ name: String, namespace: Bool = false, _ body: (inout Writer) -> Void) {
            text += namespace ? "<\(name) xmlns=\"\(S3XML.namespace)\">" : "<\(name)>"
            body(&self)
            text += "</\(name)>"
        }

        public mutating func text(_ name: String, _ value: String) {
            text += "<\(name)>\(S3XML.escape(value))</\(name)>"
        }

        public mutating func text(_ name: String, _ value: String?) {
            if let value { text(name, value) }
        }

        public var bytes: [UInt8] { Array(text.utf8) }
    }

    /// One element of a parsed body.
    public struct Element: Equatable {
        public var name: String
        public var text: String
        public var children: [Element]

        public func child(_ name: String) -> Element? { children.first { $0.name == name } }
        public func all(_ name: String) -> [Element] { children.filter { $0.name == name } }
        /// The text of a child element, trimmed.
        public func value(_ name: String) -> String? {
            child(name).map { $0.text.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
    }

    public struct ParseError: Error, Equatable {
        public let reason: String
    }

    /// Parses a document into its root element. Comments, processing instructions and the
    /// XML declaration are skipped; a DOCTYPE is refused (no entity expansion, ever).
    public static func parse(_ bytes: [UInt8]) throws -> Element {
        var parser = Parser(bytes: bytes)
        return try parser.document()
    }

    private struct Parser {
        let bytes: [UInt8]
        var at = 0
        var depth = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        mutating func document() throws -> Element {
            skipMisc()
            guard at < bytes.count, bytes[at] == UInt8(ascii: "<") else { throw ParseError(reason: "no root element") }
            let root = try element()
            skipMisc()
            guard at == bytes.count else { throw ParseError(reason: "content after the root element") }
            return root
        }

        /// Whitespace, comments, processing instructions.
        mutating func skipMisc() {
            while true {
                while at < bytes.count, isSpace(bytes[at]) { at += 1 }
                if starts("<?") { skip(past: "?>") } else if starts("<!--") { skip(past: "-->") } else { return }
            }
        }

        func starts(_ text: String) -> Bool {
            let pattern = Array(text.utf8)
            return at + pattern.count <= bytes.count && Array(bytes[at..<at + pattern.count]) == pattern
        }

        mutating func skip(past text: String) {
            let pattern = Array(text.utf8)
            while at + pattern.count <= bytes.count {
                if Array(bytes[at..<at + pattern.count]) == pattern { at += pattern.count; return }
                at += 1
            }
            at = bytes.count
        }

        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }

        mutating func name() throws -> String {
            let start = at
            while at < bytes.count, !isSpace(bytes[at]), bytes[at] != UInt8(ascii: ">"), bytes[at] != UInt8(ascii: "/"),
                  bytes[at] != UInt8(ascii: "=") { at += 1 }
            guard at > start else { throw ParseError(reason: "missing element name") }
            let full = String(decoding: bytes[start..<at], as: UTF8.self)
            // A namespace prefix ("s3:Part") is dropped: S3's documents use one namespace.
            return full.split(separator: ":").last.map(String.init) ?? full
        }

        mutating func element() throws -> Element {
            depth += 1
            defer { depth -= 1 }
            guard depth < 32 else { throw ParseError(reason: "elements nested too deep") }
            at += 1 // "<"
            if starts("!") { throw ParseError(reason: "DOCTYPE and CDATA are not accepted") }
            var element = Element(name: try name(), text: "", children: [])
            // Attributes (xmlns and the like) are read past and ignored.
            while true {
                while at < bytes.count, isSpace(bytes[at]) { at += 1 }
                guard at < bytes.count else { throw ParseError(reason: "unterminated tag") }
                if bytes[at] == UInt8(ascii: "/") {
                    guard at + 1 < bytes.count, bytes[at + 1] == UInt8(ascii: ">") else { throw ParseError(reason: "bad empty tag") }
                    at += 2
                    return element
                }
                if bytes[at] == UInt8(ascii: ">") { at += 1; break }
                _ = try name()
                guard at < bytes.count, bytes[at] == UInt8(ascii: "=") else { throw ParseError(reason: "attribute without a value") }
                at += 1
                guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") || bytes[at] == UInt8(ascii: "'") else {
                    throw ParseError(reason: "unquoted attribute value")
                }
                let quote = bytes[at]
                at += 1
                while at < bytes.count, bytes[at] != quote { at += 1 }
                guard at < bytes.count else { throw ParseError(reason: "unterminated attribute value") }
                at += 1
            }
            var text: [UInt8] = []
            while at < bytes.count {
                if bytes[at] == UInt8(ascii: "<") {
                    if starts("<!--") { skip(past: "-->"); continue }
                    if starts("<?") { skip(past: "?>"); continue }
                    if starts("</") {
                        at += 2
                        let closing = try name()
                        while at < bytes.count, isSpace(bytes[at]) { at += 1 }
                        guard at < bytes.count, bytes[at] == UInt8(ascii: ">"), closing == element.name else {
                            throw ParseError(reason: "mismatched closing tag </\(closing)>")
                        }
                        at += 1
                        element.text = try decodeEntities(text)
                        return element
                    }
                    element.children.append(try self.element())
                } else {
                    text.append(bytes[at])
                    at += 1
                }
            }
            throw ParseError(reason: "unterminated element <\(element.name)>")
        }

        func decodeEntities(_ raw: [UInt8]) throws -> String {
            guard raw.contains(UInt8(ascii: "&")) else { return String(decoding: raw, as: UTF8.self) }
            var out: [UInt8] = []
            var index = 0
            while index < raw.count {
                guard raw[index] == UInt8(ascii: "&") else { out.append(raw[index]); index += 1; continue }
                guard let end = raw[index...].firstIndex(of: UInt8(ascii: ";")), end - index <= 12 else {
                    throw ParseError(reason: "unterminated entity")
                }
                let entity = String(decoding: raw[(index + 1)..<end], as: UTF8.self)
                switch entity {
                case "amp": out.append(UInt8(ascii: "&"))
                case "lt": out.append(UInt8(ascii: "<"))
                case "gt": out.append(UInt8(ascii: ">"))
                case "quot": out.append(UInt8(ascii: "\""))
                case "apos": out.append(UInt8(ascii: "'"))
                default:
                    let number = entity.hasPrefix("#x") ? UInt32(entity.dropFirst(2), radix: 16)
                        : entity.hasPrefix("#") ? UInt32(entity.dropFirst()) : nil
                    guard let number, let scalar = Unicode.Scalar(number) else { throw ParseError(reason: "unknown entity &\(entity);") }
                    out += Array(String(Character(scalar)).utf8)
                }
                index = end + 1
            }
            return String(decoding: out, as: UTF8.self)
        }
    }
}
