import Foundation

/// The JSON of etcd's v3 gateway (grpc-gateway over the gRPC API, etcd 3.4): what `Etcd`
/// sends and how it reads the answers.
///
/// The gateway writes proto3 JSON: 64-bit integers are strings ("42"), bytes are base64, and
/// a field whose value is zero, empty or false is left out altogether (a range that found
/// nothing has no `kvs`, a failed transaction no `succeeded`, a key without a lease no
/// `lease`). So every field but the ones that identify an answer is optional here and reads
/// as its zero; what is there must have the right type, or the answer is `.malformed`.
enum EtcdWire {
    /// Decodes an answer; any decoding failure is `.malformed`, naming the call.
    static func decode<Answer: Decodable>(_ type: Answer.Type, _ body: [UInt8], call: String) throws -> Answer {
        do {
            return try JSONDecoder().decode(Answer.self, from: Data(body))
        } catch {
            throw Etcd.Failure.malformed("\(call) answer: \(Self.reason(error))")
        }
    }

    /// A request body. Keys and values are base64 and 64-bit integers strings, as the gateway writes them.
    static func encode(_ request: [String: Any]) -> [UInt8] {
        // Only strings, integers, booleans, arrays and dictionaries of them go in: always valid JSON.
        (try? Array(JSONSerialization.data(withJSONObject: request))) ?? []
    }

    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    /// The `range_end` that makes a range cover every key starting with `prefix`: the
    /// prefix with its last byte incremented (UTF-8 has no byte 0xff to overflow); "\0", which
    /// means every key, for the empty prefix.
    static func rangeEnd(prefix: String) -> [UInt8] {
        var end = Array(prefix.utf8)
        guard let last = end.last else { return [0] }
        end[end.count - 1] = last + 1
        return end
    }

    private static func reason(_ error: any Error) -> String {
        switch error {
        case let failure as Etcd.Failure: return failure.description
        case DecodingError.dataCorrupted(let context): return context.debugDescription + at(context.codingPath)
        case DecodingError.keyNotFound(let key, let context): return "no \(key.stringValue)" + at(context.codingPath)
        case DecodingError.typeMismatch(_, let context): return context.debugDescription + at(context.codingPath)
        case DecodingError.valueNotFound(_, let context): return "null" + at(context.codingPath)
        default: return String(describing: error)
        }
    }

    private static func at(_ path: [any CodingKey]) -> String {
        path.isEmpty ? "" : " at " + path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }

    // MARK: Values

    /// A proto3 int64: a string of digits; a plain JSON number is accepted too, as the
    /// proto3 JSON mapping asks of parsers.
    struct Int64Field: Decodable {
        let value: Int64

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self) {
                guard let value = Int64(text) else {
                    throw DecodingError.dataCorruptedError(in: container, debugDescription: "\"\(text)\" is not a 64-bit integer")
                }
                self.value = value
            } else {
                value = try container.decode(Int64.self)
            }
        }
    }

    /// Proto3 bytes: standard base64.
    struct BytesField: Decodable {
        let bytes: [UInt8]

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let data = Data(base64Encoded: text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not base64")
            }
            bytes = Array(data)
        }
    }

    /// A message whose fields are not needed, only that it is there (and an object).
    struct Present: Decodable {
        private enum NoKeys: CodingKey {}

        init(from decoder: any Decoder) throws { _ = try decoder.container(keyedBy: NoKeys.self) }
    }

    // MARK: Answers

    struct KeyValue: Decodable {
        let key: BytesField
        let value: BytesField?
        let createRevision: Int64Field?
        let modRevision: Int64Field?
        let lease: Int64Field?

        enum CodingKeys: String, CodingKey {
            case key, value, lease
            case createRevision = "create_revision"
            case modRevision = "mod_revision"
        }

        /// Keys are written by `Etcd` from strings; one that is not UTF-8 is not ours.
        func entry() throws -> Etcd.Entry {
            guard let key = String(validating: key.bytes, as: UTF8.self) else {
                throw Etcd.Failure.malformed("a key that is not UTF-8: \(Data(key.bytes).base64EncodedString())")
            }
            return Etcd.Entry(key: key, value: value?.bytes ?? [], createRevision: createRevision?.value ?? 0,
                              modRevision: modRevision?.value ?? 0, lease: lease?.value ?? 0)
        }
    }

    struct Range: Decodable {
        let kvs: [KeyValue]?

        var entries: [Etcd.Entry] { get throws { try (kvs ?? []).map { try $0.entry() } } }

        /// The one entry of a range over a single key.
        var single: Etcd.Entry? {
            get throws {
                let entries = try entries
                guard entries.count <= 1 else { throw Etcd.Failure.malformed("\(entries.count) entries for one key") }
                return entries.first
            }
        }
    }

    struct Txn: Decodable {
        let succeeded: Bool?
        let responses: [Response]?

        /// Which branch ran and the entry each of its `.get`s read, checking that the
        /// responses answer that branch's operations one for one.
        func outcome(then: [Etcd.Operation], else otherwise: [Etcd.Operation]) throws -> (succeeded: Bool, gets: [Etcd.Entry?]) {
            let succeeded = succeeded ?? false
            let branch = succeeded ? then : otherwise
            let responses = responses ?? []
            guard responses.count == branch.count else {
                throw Etcd.Failure.malformed("transaction answer: \(responses.count) responses to \(branch.count) operations")
            }
            var gets: [Etcd.Entry?] = []
            for (operation, response) in zip(branch, responses) {
                switch (operation, response) {
                case (.get, .range(let range)): gets.append(try range.single)
                case (.put, .put), (.delete, .delete): break
                default: throw Etcd.Failure.malformed("transaction answer: \(response.name) answering a \(operation.name)")
                }
            }
            return (succeeded, gets)
        }

        enum Response: Decodable {
            case range(Range), put, delete

            var name: String {
                switch self {
                case .range: "response_range"
                case .put: "response_put"
                case .delete: "response_delete_range"
                }
            }

            enum CodingKeys: String, CodingKey {
                case range = "response_range", put = "response_put", delete = "response_delete_range"
            }

            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                let range = try container.decodeIfPresent(Range.self, forKey: .range)
                let put = try container.decodeIfPresent(Present.self, forKey: .put)
                let delete = try container.decodeIfPresent(Present.self, forKey: .delete)
                switch (range, put, delete) {
                case (let range?, nil, nil): self = .range(range)
                case (nil, _?, nil): self = .put
                case (nil, nil, _?): self = .delete
                default:
                    throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                            debugDescription: "not exactly one of response_range, response_put, response_delete_range"))
                }
            }
        }
    }

    struct LeaseGrant: Decodable {
        let id: Int64Field
        /// Set when etcd could not grant the lease (proto field `error`).
        let error: String?

        enum CodingKeys: String, CodingKey { case id = "ID", error }
    }

    /// A lease's remaining seconds, from a keepalive or a time-to-live answer: absent (zero)
    /// or -1 once etcd no longer knows the lease.
    struct LeaseTTL: Decodable {
        let ttl: Int64Field?

        enum CodingKeys: String, CodingKey { case ttl = "TTL" }

        var seconds: Int64 { ttl?.value ?? 0 }
    }

    /// The keepalive call is a gRPC stream: the gateway answers 200 and then writes each
    /// message as `{"result": ...}`, or `{"error": ...}` when the stream failed.
    struct KeepAliveStream: Decodable {
        let result: LeaseTTL?
        let error: StreamError?

        struct StreamError: Decodable {
            let httpCode: Int?
            let message: String?

            enum CodingKeys: String, CodingKey { case httpCode = "http_code", message }
        }
    }

    /// The body of an answer other than 200: `{"error": "...", "message": "...", "code": 5}`.
    struct ErrorBody: Decodable {
        let message: String?
        let error: String?
        let code: Int?
    }
}
