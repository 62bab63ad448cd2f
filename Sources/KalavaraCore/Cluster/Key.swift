import KalavaraHTTP
import KalavaraSupport
/// A key of the store: 1 to 1024 bytes, anything but NUL.
///
/// Keys are names, not paths: `a/../b` is a key of its own, and nothing derives a file
/// path from the key's text (volumes hash it).
public struct Key: Hashable, CustomStringConvertible, Sendable {
    public static let maxBytes = 1024
    let bytes: [UInt8]

    /// Validates raw key bytes.
    public init(_ bytes: [UInt8]) throws {
        guard !bytes.isEmpty else { throw HTTPError(400, "empty key") }
        guard bytes.count <= Self.maxBytes else { throw HTTPError(414, "key longer than \(Self.maxBytes) bytes") }
        guard !bytes.contains(0) else { throw HTTPError(400, "key contains a NUL byte") }
        self.bytes = bytes
    }

    public init(_ text: String) throws { try self.init(Array(text.utf8)) }

    /// The key named by a request path's remainder after `/store/`, still percent-encoded.
    init(percentEncoded: Substring) throws {
        guard let decoded = PercentEncoding.decode(percentEncoded.utf8) else {
            throw HTTPError(400, "invalid percent-encoding in key")
        }
        try self.init(decoded)
    }

    /// The key as it goes into a `Location`: slashes kept for readability, dots and every
    /// other reserved or non-ASCII byte escaped.
    public var pathComponent: String { PercentEncoding.encode(bytes, keepSlashes: true) }

    /// For logs: the key as text, with undecodable bytes replaced.
    public var description: String { String(decoding: bytes, as: UTF8.self) }
}
