import TestSupport

/// Histories of a simulated linearizable store, for testing `Linearizability.check` at
/// random: clients take turns in time order, each operation takes effect at one instant
/// inside its interval (the intervals of different clients overlap), and reads return what
/// the registers held at their instant. Some writes and deletes time out (`.unknown`; half of
/// them take effect, possibly after the client gave up) or are refused (`.failed`; they do
/// not take effect); some reads time out.
struct SimulatedRegisters {
    var operations = 500
    var keys = 4
    var clients = 4
    var unknownRate = 0.05
    var failedRate = 0.05

    func history(seed: UInt64) -> [HistoryOperation] {
        var random = SplitMix64(seed: seed)
        var clientClock = (0..<clients).map { _ in Double.random(in: 0..<1, using: &random) }
        var planned: [(operation: HistoryOperation, takesEffect: Double?)] = []
        for id in 0..<operations {
            let client = clientClock.indices.min { clientClock[$0] < clientClock[$1] }!
            let invoked = clientClock[client]
            let roll = Double.random(in: 0..<1, using: &random)
            let kind: HistoryOperation.Kind = roll < 0.45 ? .read : roll < 0.85 ? .write(Array("v\(id)".utf8)) : .delete
            var takesEffect: Double? = invoked + Double.random(in: 0.001...1, using: &random)
            var responded = takesEffect! + Double.random(in: 0.001...1, using: &random)
            var outcome = HistoryOperation.Outcome.ok(read: nil)
            let fate = Double.random(in: 0..<1, using: &random)
            if fate < unknownRate {
                outcome = .unknown
                responded = invoked + Double.random(in: 0.001...1, using: &random)
                let happens = kind != .read && Bool.random(using: &random)
                takesEffect = happens ? invoked + Double.random(in: 0.001...3, using: &random) : nil
            } else if fate < unknownRate + failedRate, kind != .read {
                outcome = .failed
                takesEffect = nil
            }
            clientClock[client] = responded + Double.random(in: 0..<0.2, using: &random)
            let key = "k\(Int.random(in: 0..<keys, using: &random))"
            planned.append((HistoryOperation(id: id, key: key, kind: kind, invoked: invoked, responded: responded,
                                             outcome: outcome), takesEffect))
        }
        var registers: [String: [UInt8]] = [:]
        let effective = planned.indices.filter { planned[$0].takesEffect != nil }
        for index in effective.sorted(by: { planned[$0].takesEffect! < planned[$1].takesEffect! }) {
            let operation = planned[index].operation
            switch operation.kind {
            case .write(let value): registers[operation.key] = value
            case .delete: registers[operation.key] = nil
            case .read: planned[index].operation.outcome = .ok(read: registers[operation.key])
            }
        }
        return planned.map(\.operation)
    }

    /// `history` with one successful read changed to return a value it provably cannot
    /// have seen, and that read's id; nil if the history has no successful read.
    ///
    /// The value is one of: never written; written by a refused write; written by a write
    /// invoked after the read returned (from the future); or written by a successful write
    /// that a later successful write or delete, completed before the read began, overwrote.
    static func withImpossibleRead(_ history: [HistoryOperation], seed: UInt64) -> (history: [HistoryOperation], read: Int)? {
        var random = SplitMix64(seed: seed)
        let reads = history.indices.filter { history[$0].kind == .read && history[$0].outcome != .unknown }
        guard let index = reads.randomElement(using: &random) else { return nil }
        let read = history[index]
        let sameKey = history.filter { $0.key == read.key }
        func succeeded(_ operation: HistoryOperation) -> Bool {
            operation.kind != .read && operation.outcome == .ok(read: nil)
        }
        var impossible: [[UInt8]] = [Array("never written".utf8)]
        for operation in sameKey {
            guard case .write(let value) = operation.kind else { continue }
            let overwritten = succeeded(operation) && sameKey.contains {
                succeeded($0) && operation.responded < $0.invoked && $0.responded < read.invoked
            }
            if operation.outcome == .failed || operation.invoked > read.responded || overwritten {
                impossible.append(value)
            }
        }
        var mutated = history
        mutated[index].outcome = .ok(read: impossible.randomElement(using: &random)!)
        return (mutated, read.id)
    }
}

/// A small seeded generator, so that a failing seed can be run again.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xbf58_476d_1ce4_e5b9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94d0_49bb_1331_11eb
        return mixed ^ (mixed >> 31)
    }
}
