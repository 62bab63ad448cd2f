import Foundation
import KalavaraHTTP
import KalavaraSupport

/// An answer of etcd's gateway that `Etcd.call` decodes.
protocol EtcdAnswer: Decodable {
    /// For a streamed call, answered 200 before the stream ran: the error the stream ended
    /// with, as an HTTP status and message.
    var streamError: (status: Int, message: String)? { get }
}

extension EtcdAnswer {
    var streamError: (status: Int, message: String)? { nil }
}

extension EtcdWire.Present: EtcdAnswer {}
extension EtcdWire.Range: EtcdAnswer {}
extension EtcdWire.Txn: EtcdAnswer {}
extension EtcdWire.LeaseGrant: EtcdAnswer {}
extension EtcdWire.LeaseTTL: EtcdAnswer {}

extension EtcdWire.KeepAliveStream: EtcdAnswer {
    var streamError: (status: Int, message: String)? {
        error.map { ($0.httpCode ?? 500, $0.message ?? "keepalive stream failed") }
    }
}

extension Etcd {
    /// Posts `request` to `path`, on the endpoints in turn from the one that answered last,
    /// within `timeout` in all, and decodes the first answer that is not a failure of the
    /// endpoint (see the type's comment).
    func call<Answer: EtcdAnswer>(_ path: String, _ request: [String: Any], as type: Answer.Type) throws -> Answer {
        let body = EtcdWire.encode(request)
        let deadline = monotonicSeconds() + timeout
        let first = preferredEndpoint
        var failures: [String] = []
        for step in 0..<endpoints.count {
            let index = (first + step) % endpoints.count
            let endpoint = endpoints[index]
            let remaining = deadline - monotonicSeconds()
            guard remaining > 0.001, let url = HTTPURL(endpoint.origin + path) else {
                failures.append("\(endpoint): no time left")
                continue
            }
            // Later attempts get only what is left of the call's time, on a connection of their own.
            let attempt = step == 0 ? pooledClient : HTTPClient(timeout: remaining, maxIdlePerHost: 0)
            let response: ClientResponse
            do {
                response = try attempt.send("POST", url, headers: HTTPHeaders([("Content-Type", "application/json")]), body: body)
            } catch {
                failures.append("\(endpoint): \(Self.describe(error))")
                continue
            }
            if response.status >= 500 {
                failures.append("\(endpoint): \(response.status) \(Self.message(response.body))")
                continue
            }
            guard response.status == 200 else {
                throw Failure.refused(status: response.status, message: Self.message(response.body))
            }
            let answer = try EtcdWire.decode(Answer.self, response.body, call: path)
            if let (status, message) = answer.streamError {
                guard status >= 500 else { throw Failure.refused(status: status, message: message) }
                failures.append("\(endpoint): \(status) \(message)")
                continue
            }
            preferredEndpoint = index
            return answer
        }
        throw Failure.unreachable(endpoints.isEmpty ? "no endpoints" : failures.joined(separator: "; "))
    }

    /// The message of an error answer's body, or its text when it is not etcd's error JSON.
    static func message(_ body: [UInt8]) -> String {
        if let error = try? JSONDecoder().decode(EtcdWire.ErrorBody.self, from: Data(body)),
           let message = error.message ?? error.error {
            return message
        }
        return String(decoding: body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case ConnectionError.failed(let code): String(cString: strerror(code))
        case ConnectionError.timedOut: "timed out"
        case ConnectionError.closedByPeer: "connection closed"
        default: String(describing: error)
        }
    }
}
