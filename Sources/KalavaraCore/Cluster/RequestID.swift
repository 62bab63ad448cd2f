import KalavaraHTTP
import KalavaraSupport
/// A request id that follows one write through the cluster: the master makes it (or takes
/// the client's `X-Request-Id`) when it redirects a PUT, puts it in the ticket, the volume
/// logs with it and sends it with the commit, and the master logs the commit with it. So
/// `grep rid=…` over the daemons' logs tells one write's whole story.
enum RequestID {
    static let header = "X-Request-Id"

    /// The client's id when it is a sane token (1–64 of `A-Za-z0-9-_.:`), else a new one.
    static func from(_ headers: HTTPHeaders) -> String {
        if let given = headers[header], isValid(given) { return given }
        return make()
    }

    /// 16 random hex digits.
    static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        return Hex.encode((0..<8).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    static func isValid(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 64 && text.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E || $0 == 0x3A
        }
    }
}
