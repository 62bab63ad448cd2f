/// Whether a key-value history is linearizable: whether every operation can be given one
/// instant between its invocation and its response such that, in the order of those
/// instants, every read returns the value of the latest write (or absent, after a delete or
/// before any write).
///
/// The keys are independent registers, and linearizability composes: a history is
/// linearizable iff each key's sub-history is, so each key is searched alone (`RegisterSearch`).
/// What an outcome allows:
/// - `.ok`: the operation took effect once, inside its interval; a read saw what it returned.
/// - `.failed`: it did not take effect; it is left out.
/// - `.unknown`: a write or delete may take effect at any time after its invocation, or
///   never (its response time counts as +infinity); a read of unknown outcome says nothing
///   and is left out.
public enum Linearizability {
    public enum Result: Sendable, Equatable {
        case linearizable
        case violation(Violation)
    }

    /// A key whose operations cannot be linearized, with a small set of them that already cannot.
    public struct Violation: Sendable, Equatable, CustomStringConvertible {
        public let key: String
        /// A subset of the key's operations that on its own cannot be linearized, in
        /// invocation order: what the search narrowed the key down to (see `explain`).
        public let operations: [HistoryOperation]

        public var description: String {
            "not linearizable on key \"\(key)\"; these \(operations.count) operations alone cannot be ordered:\n"
                + operations.map { "  \($0)" }.joined(separator: "\n")
        }
    }

    /// Checks every key; reports the first violating key in key order.
    public static func check(_ operations: [HistoryOperation]) -> Result {
        let byKey = Dictionary(grouping: operations, by: \.key)
        for key in byKey.keys.sorted() {
            let register = registerOperations(byKey[key]!)
            if case .violation(let blocking) = RegisterSearch.run(register).outcome {
                let witness = explain(blocking.map { register[$0] })
                return .violation(Violation(key: key, operations: witness.map(\.source)))
            }
        }
        return .linearizable
    }

    /// One key's operations as the search sees them: failed ones and unknown reads dropped,
    /// unknown writes and deletes open-ended, values interned (0 is absent).
    private static func registerOperations(_ operations: [HistoryOperation]) -> [RegisterOperation] {
        var interned: [[UInt8]: Int] = [:]
        func intern(_ value: [UInt8]?) -> Int {
            guard let value else { return 0 }
            if let known = interned[value] { return known }
            interned[value] = interned.count + 1
            return interned.count
        }
        return operations.compactMap { operation in
            let effect: RegisterOperation.Effect
            switch (operation.kind, operation.outcome) {
            case (_, .failed), (.read, .unknown): return nil
            case (.read, .ok(let seen)): effect = .read(intern(seen))
            case (.write(let value), _): effect = .write(intern(value))
            case (.delete, _): effect = .write(0)
            }
            let responded = operation.outcome == .unknown ? Double.infinity : operation.responded
            return RegisterOperation(source: operation, invoked: operation.invoked, responded: responded, effect: effect)
        }
    }

    /// How many states the narrowing of a violation may explore in all, about 5 seconds in a
    /// debug build. A trial that still fails explores every state before the point where it
    /// gets stuck (one key shared by 8 clients, stuck 650 operations in: 200,000 states), so
    /// on a long busy history the budget ends the narrowing and the explanation stays larger.
    private static let explanationBudget = 1_000_000

    /// Narrows a non-linearizable set of operations to a smaller one that is still not
    /// linearizable, removing chunks of operations (halves, then quarters, ... then single
    /// ones, latest first) while the rest still fails. Not guaranteed minimal.
    ///
    /// Only removals that cannot create a violation are tried, so the one left is one the
    /// whole history has: removing a read never makes a linearizable set fail, nor does
    /// removing a write (or delete) of a value no remaining read returned. Removing the write
    /// a read saw would make up a "read of a value never written" that is not the problem.
    private static func explain(_ failing: [RegisterOperation]) -> [RegisterOperation] {
        var kept = failing.sorted { $0.invoked < $1.invoked }
        var budget = explanationBudget
        var chunk = max(kept.count / 2, 1)
        while true {
            var end = kept.count
            while end > 0, budget > 0 {
                let start = max(end - chunk, 0)
                let trial = removing(start..<end, from: kept)
                if trial.count < kept.count {
                    let (outcome, states) = RegisterSearch.run(trial, stateBudget: budget)
                    budget -= states
                    if case .violation(let blocking) = outcome {
                        kept = blocking.map { trial[$0] }.sorted { $0.invoked < $1.invoked }
                        end = min(start, kept.count)
                        continue
                    }
                }
                end = start
            }
            if chunk == 1 || budget <= 0 { return kept }
            chunk = max(chunk / 2, 1)
        }
    }

    /// `operations` without those at `positions`, except the writes of values that the reads
    /// left returned.
    private static func removing(_ positions: Range<Int>, from operations: [RegisterOperation]) -> [RegisterOperation] {
        let seen = Set(operations.indices.compactMap { position -> Int? in
            guard !positions.contains(position), case .read(let value) = operations[position].effect else { return nil }
            return value
        })
        return operations.indices.compactMap { position in
            guard positions.contains(position) else { return operations[position] }
            guard case .write(let value) = operations[position].effect, seen.contains(value) else { return nil }
            return operations[position]
        }
    }
}
