import Synchronization

/// One client operation on one key, as the client saw it: when it asked, when (if ever) it
/// heard back, and what it heard. `Linearizability.check` judges a list of these.
public struct HistoryOperation: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case write([UInt8])
        case delete
        case read
    }

    public enum Outcome: Sendable, Hashable {
        /// The client got an answer. For a read, the value it read (nil: not found); for a
        /// write or a delete, nil.
        case ok(read: [UInt8]?)
        /// A definite refusal (a 4xx): the operation did not take effect.
        case failed
        /// A timeout, a connection error, a 5xx, or no answer yet: the operation may have
        /// taken effect at any time after its invocation, or never.
        case unknown
    }

    /// Unique within a history; how an explanation names the operation.
    public var id: Int
    public var key: String
    public var kind: Kind
    /// Monotonic seconds when the client sent the request.
    public var invoked: Double
    /// Monotonic seconds when the outcome arrived; +infinity while none has.
    public var responded: Double
    public var outcome: Outcome

    public init(id: Int, key: String, kind: Kind, invoked: Double, responded: Double, outcome: Outcome) {
        self.id = id
        self.key = key
        self.kind = kind
        self.invoked = invoked
        self.responded = responded
        self.outcome = outcome
    }

    /// For example `#7 read "k" -> "v3" [1.250, 1.300] ok`.
    public var description: String {
        let action: String
        switch (kind, outcome) {
        case (.write(let value), _): action = "write \(Self.show(key)) = \(Self.show(value))"
        case (.delete, _): action = "delete \(Self.show(key))"
        case (.read, .ok(let value)): action = "read \(Self.show(key)) -> \(value.map(Self.show) ?? "absent")"
        case (.read, _): action = "read \(Self.show(key))"
        }
        let verdict = switch outcome {
        case .ok: "ok"
        case .failed: "failed"
        case .unknown: "unknown"
        }
        return "#\(id) \(action) [\(Self.show(seconds: invoked)), \(Self.show(seconds: responded))] \(verdict)"
    }

    private static func show(_ text: String) -> String { "\"\(text)\"" }

    /// Printable UTF-8 as a quoted string, anything else as hex.
    private static func show(_ bytes: [UInt8]) -> String {
        if bytes.allSatisfy({ (0x20..<0x7f).contains($0) }) { return show(String(decoding: bytes, as: UTF8.self)) }
        let hex = "0123456789abcdef".map { $0 }
        return "0x" + String(bytes.flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 0xf)]] })
    }

    private static func show(seconds: Double) -> String {
        guard seconds.isFinite else { return "∞" }
        let millis = Int((seconds * 1000).rounded())
        let fraction = String(millis % 1000)
        return "\(millis / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }
}

/// Records what concurrent clients did, for `Linearizability.check`. Each client calls
/// `invoke` just before sending a request and `complete` once it knows the outcome; times
/// are taken under the lock, so ids follow invocation order. An operation never completed
/// (its client gave up or the test ended) stays `.unknown`, which is what it is.
public final class HistoryRecorder: Sendable {
    private let start = ContinuousClock.now
    private let recorded = Mutex<[HistoryOperation]>([])

    public init() {}

    /// Records the invocation (now) and returns the operation's id for `complete`.
    public func invoke(key: String, kind: HistoryOperation.Kind) -> Int {
        recorded.withLock { operations in
            let id = operations.count
            operations.append(HistoryOperation(id: id, key: key, kind: kind, invoked: secondsSinceStart(),
                                               responded: .infinity, outcome: .unknown))
            return id
        }
    }

    /// Records the response (now) and what it said.
    public func complete(_ id: Int, _ outcome: HistoryOperation.Outcome) {
        recorded.withLock { operations in
            precondition(operations[id].responded == .infinity, "operation #\(id) completed twice")
            operations[id].responded = secondsSinceStart()
            operations[id].outcome = outcome
        }
    }

    /// Everything recorded so far, in invocation order.
    public var operations: [HistoryOperation] { recorded.withLock { $0 } }

    private func secondsSinceStart() -> Double {
        let (seconds, attoseconds) = start.duration(to: .now).components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
