import Foundation
import KalavaraHTTP
import KalavaraSupport

/// The signature on every call between the daemons of a signed cluster: commits,
/// resolves, purge and corruption reports, replica writes and removals, outcome notices,
/// copies, inventories, health checks and registrations. One scheme, applied by the HTTP
/// client to whatever it sends and checked by the access gate before any handler runs.
///
/// Three headers:
/// - `Kalavara-Date`: the sender's clock, in Unix seconds;
/// - `Kalavara-Content-SHA256`: the SHA-256 (hex) of the body, or `UNSIGNED-PAYLOAD` for
///   a streamed one (a replica copy, whose size and CRC-32 are covered instead);
/// - `Kalavara-Signature`: HMAC-SHA256 under the cluster secret of the canonical text:
///   scheme, method, target (path and query as sent), date, content digest, length, and
///   the values of the `Kalavara-` headers that carry meaning (`coveredHeaders`).
///
/// A call whose date is more than `window` seconds from the receiver's clock is refused, so
/// a captured call cannot be replayed later; within the window, a replay repeats an
/// operation that is idempotent or refused (a version is written once).
public enum SignedCall {
    static let dateHeader = "Kalavara-Date"
    static let contentHeader = "Kalavara-Content-SHA256"
    static let signatureHeader = "Kalavara-Signature"
    static let unsignedPayload = "UNSIGNED-PAYLOAD"
    /// How far a call's date may be from the receiver's clock.
    static let window: Double = 30
    /// Headers whose values change what a call does; the signature covers them.
    static let coveredHeaders = [VolumeHeaders.checksum, VolumeHeaders.heartbeat, VolumeHeaders.master, VolumeHeaders.selfURL]
    static let emptyBodyDigest = SHA256.hex([])

    static func canonical(method: String, target: String, date: String, content: String, length: String,
                          headers: HTTPHeaders) -> String {
        var text = "KALAVARA-CALL-1\n\(method)\n\(target)\n\(date)\n\(content)\n\(length)"
        for name in coveredHeaders { text += "\n" + (headers[name] ?? "") }
        return text
    }

    /// Adds the signature headers to a call about to be sent. `body` nil: streamed, unsigned
    /// payload of `length` bytes (nil: chunked).
    public static func sign(_ headers: inout HTTPHeaders, method: String, target: String, body: [UInt8]?,
                            length: Int?, secret: ClusterSecret, now: Double = Date().timeIntervalSince1970) {
        let date = String(Int64(now))
        let content = body.map { $0.isEmpty ? emptyBodyDigest : SHA256.hex($0) } ?? unsignedPayload
        let lengthText = body.map { String($0.count) } ?? length.map(String.init) ?? "chunked"
        headers.set(dateHeader, date)
        headers.set(contentHeader, content)
        headers.set(signatureHeader, secret.sign(canonical(method: method, target: target, date: date, content: content,
                                                           length: lengthText, headers: headers)))
    }

    enum Verdict: Equatable, Sendable {
        case valid
        /// No signature at all.
        case unsigned
        case invalid(String)
    }

    /// Checks a received call's signature and date. `streamed`: the route reads its body as
    /// a stream, so an unsigned payload is allowed (its length is still covered); elsewhere
    /// the body's digest must be given, and the handler that reads the body checks it
    /// (`verifyBody`). A bodiless call's digest is checked here.
    static func verify(_ request: HTTPRequest, secret: ClusterSecret, streamed: Bool = false,
                              now: Double = Date().timeIntervalSince1970) -> Verdict {
        guard let signature = request.headers[signatureHeader] else { return .unsigned }
        guard let date = request.headers[dateHeader], let seconds = Double(date),
              let content = request.headers[contentHeader] else {
            return .invalid("signed call without its date or content digest")
        }
        guard abs(now - seconds) <= window else {
            return .invalid("signed call is stale (its date is \(Int(now - seconds)) s from this daemon's clock)")
        }
        let length = request.framing.declaredLength.map(String.init) ?? "chunked"
        if content == unsignedPayload {
            guard streamed else { return .invalid("this call's body must be signed") }
        } else if length == "0", content != emptyBodyDigest {
            return .invalid("signed content digest does not match the empty body")
        }
        let text = canonical(method: request.method, target: request.target, date: date, content: content,
                             length: length, headers: request.headers)
        return secret.verify(signature, of: text) ? .valid : .invalid("bad signature")
    }

    /// For handlers that read a signed call's body into memory: the body must be what was signed.
    static func verifyBody(_ request: HTTPRequest, _ body: [UInt8], secret: ClusterSecret?) throws {
        guard secret != nil, let content = request.headers[contentHeader] else { return }
        guard content != unsignedPayload, SHA256.hex(body) == content else {
            throw HTTPError(403, "the body is not the one the call's signature covers")
        }
    }

    // MARK: Health answers

    /// A volume's health answer carries cluster data (free space, counts) that the master
    /// acts on: in a signed cluster the volume signs it, bound to the check's own signature
    /// so that an old answer cannot be replayed.
    static let answerSignatureHeader = "Kalavara-Answer-Signature"

    /// The zone is signed too (it decides where copies go), as a last line only when the
    /// answer names one: an answer that does not (an older volume's) signs as before.
    static func healthText(requestSignature: String, headers: HTTPHeaders) -> String {
        "KALAVARA-HEALTH-1\n\(requestSignature)\n" + [VolumeHeaders.freeBytes, VolumeHeaders.valueCount, VolumeHeaders.unknownFiles,
                                                                 VolumeHeaders.totalBytes, VolumeHeaders.requests]
            .map { headers[$0] ?? "" }.joined(separator: "\n")
            + (headers[VolumeHeaders.zone].map { "\nzone \($0)" } ?? "")
    }

    static func signHealthAnswer(_ answer: inout HTTPHeaders, request: HTTPRequest, secret: ClusterSecret) {
        guard let signature = request.headers[signatureHeader] else { return }
        answer.set(answerSignatureHeader, secret.sign(healthText(requestSignature: signature, headers: answer)))
    }

    static func verifyHealthAnswer(_ answer: HTTPHeaders, requestHeaders: HTTPHeaders, secret: ClusterSecret) -> Bool {
        guard let requestSignature = requestHeaders[signatureHeader], let signature = answer[answerSignatureHeader] else {
            return false
        }
        return secret.verify(signature, of: healthText(requestSignature: requestSignature, headers: answer))
    }
}
