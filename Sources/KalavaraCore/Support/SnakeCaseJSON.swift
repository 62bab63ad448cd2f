import Foundation
import KalavaraHTTP

/// The JSON of the admin answers (`/admin/scrub`, `/admin/repair`, `/admin/rebuild`,
/// `/admin/volumes`): keys are the properties' Swift names in snake_case, by the encoder's
/// key strategy (`bytesChecked` is `bytes_checked`), sorted; slashes are not escaped. An
/// optional that the API documents as `null` is marked `@NullWhenAbsent`: synthesized
/// `Encodable` leaves a nil out.
enum SnakeCaseJSON {
    /// Configured once and never changed, so any thread may encode with it.
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return encoder
    }()
}

extension HTTPResponse {
    /// A JSON answer through `SnakeCaseJSON.encoder`, newline-ended.
    static func snakeCaseJSON<Value: Encodable>(_ status: Int, _ value: Value) throws -> HTTPResponse {
        var response = HTTPResponse(status: status, body: .bytes(Array(try SnakeCaseJSON.encoder.encode(value)) + [UInt8(ascii: "\n")]))
        response.headers.set("Content-Type", "application/json")
        return response
    }
}

/// An optional property that JSON shows as `null` when it is nil, where the API documents
/// the field as null rather than absent.
@propertyWrapper
struct NullWhenAbsent<Value: Encodable & Sendable>: Encodable, Sendable {
    var wrappedValue: Value?

    init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue { try container.encode(wrappedValue) } else { try container.encodeNil() }
    }
}
