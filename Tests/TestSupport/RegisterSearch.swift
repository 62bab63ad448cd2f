/// One operation of one key's history, reduced to what the search needs: its real-time
/// interval and what it does to the register. Values are interned per key (0 is "absent"),
/// so a search state is a bitset and an integer.
struct RegisterOperation {
    enum Effect: Equatable {
        /// Sets the register (a delete sets it to 0, absent).
        case write(Int)
        /// Observed the register holding this value.
        case read(Int)
    }

    let source: HistoryOperation
    let invoked: Double
    /// +infinity for a write or delete of unknown outcome: it may take effect any time after
    /// its invocation, and as nothing can be ordered after it, also never.
    let responded: Double
    let effect: Effect
}

/// Wing & Gong's search with Lowe's memoization ("just-in-time linearization", as in Knossos
/// and porcupine) over one register's history. The calls and returns sit in a linked list
/// ordered by time; the search linearizes any call that comes before the first return still
/// in the list and whose effect fits the register's value, lifts it (and its return) out of
/// the list and starts again from the head; reaching a return means the operation could not
/// be placed before its response, so it backtracks. A (linearized set, value) state is
/// explored once: without that the search is exponential in the concurrency.
///
/// Writes of unknown outcome (open-ended) are never placed on their own, only right before
/// a read of their value that needs them. That loses nothing: in any linearization such a
/// write can move later (nothing must follow it) up to the first read that saw it, or, if
/// none did, out of the history. Placed like the others they would multiply the states by
/// two for each one pending: one key with 8 clients and 1,000 operations, 5% of them
/// timing out, did not finish in a minute.
struct RegisterSearch {
    enum Outcome: Equatable {
        case linearizable
        /// No order exists. `blocking` are the operations invoked before the latest response
        /// any attempt got stuck at, and the writes of the values their reads returned:
        /// they alone already cannot be linearized (every attempt on them takes the same
        /// steps), which is where an explanation starts.
        case violation(blocking: [Int])
        /// More than the budget of states was explored.
        case undecided
    }

    /// Searches `operations`, giving up after exploring `stateBudget` distinct states;
    /// also says how many it explored.
    static func run(_ operations: [RegisterOperation], stateBudget: Int = .max) -> (outcome: Outcome, states: Int) {
        var search = RegisterSearch(operations)
        var explored = Set<State>()
        let outcome = search.run(stateBudget: stateBudget, explored: &explored)
        return (outcome, explored.count)
    }

    private let operations: [RegisterOperation]
    /// Entry 0 is the head of the list; entries 1... are the calls and returns in time order.
    private let operationOf: [Int]
    private let isCall: [Bool]
    /// A call's return entry.
    private let returnOf: [Int]
    /// The call entries of the open-ended writes of each value.
    private let openWrites: [Int: [Int]]
    private var next: [Int]
    private var previous: [Int]
    private static let none = -1

    private init(_ operations: [RegisterOperation]) {
        self.operations = operations
        // At equal times a call sorts before a return: the two operations count as
        // concurrent, the reading that never reports a violation the clock cannot prove.
        let events = operations.indices.flatMap { [(operations[$0].invoked, 0, $0), (operations[$0].responded, 1, $0)] }
            .sorted { ($0.0, $0.1, $0.2) < ($1.0, $1.1, $1.2) }
        operationOf = [Self.none] + events.map(\.2)
        isCall = [false] + events.map { $0.1 == 0 }
        var returnOf = Array(repeating: Self.none, count: events.count + 1)
        var returnEntry = Array(repeating: Self.none, count: operations.count)
        var openWrites: [Int: [Int]] = [:]
        for (position, event) in events.enumerated() where event.1 == 1 { returnEntry[event.2] = position + 1 }
        for (position, event) in events.enumerated() where event.1 == 0 {
            returnOf[position + 1] = returnEntry[event.2]
            let operation = operations[event.2]
            if operation.responded == .infinity, case .write(let value) = operation.effect {
                openWrites[value, default: []].append(position + 1)
            }
        }
        self.returnOf = returnOf
        self.openWrites = openWrites
        next = Array(1..<events.count + 1) + [Self.none]
        previous = [Self.none] + Array(0..<events.count)
    }

    private mutating func run(stateBudget: Int, explored: inout Set<State>) -> Outcome {
        var value = 0
        var linearized = Bitset(count: operations.count)
        /// Each placed call, the value before it, and the open-ended write placed just before it.
        var placed: [(call: Int, valueBefore: Int, openWrite: Int?)] = []
        var furthestStuck = 0
        var entry = next[0]
        while entry != Self.none {
            let operation = operations[operationOf[entry]]
            if isCall[entry] {
                if operation.responded < .infinity, let (after, openWrite) = step(entry, on: value, linearized) {
                    var candidate = linearized
                    candidate.insert(operationOf[entry])
                    if let openWrite { candidate.insert(operationOf[openWrite]) }
                    if explored.insert(State(linearized: candidate, value: after)).inserted {
                        if explored.count > stateBudget { return .undecided }
                        placed.append((entry, value, openWrite))
                        value = after
                        linearized = candidate
                        if let openWrite { lift(openWrite) }
                        lift(entry)
                        entry = next[0]
                        continue
                    }
                }
                entry = next[entry]
            } else {
                // Only open-ended writes are left: they go last, or never happened.
                if operation.responded == .infinity { return .linearizable }
                furthestStuck = max(furthestStuck, entry)
                guard let (call, valueBefore, openWrite) = placed.popLast() else {
                    return .violation(blocking: blocking(before: furthestStuck))
                }
                value = valueBefore
                linearized.remove(operationOf[call])
                unlift(call)
                if let openWrite {
                    linearized.remove(operationOf[openWrite])
                    unlift(openWrite)
                }
                entry = next[call]
            }
        }
        return .linearizable
    }

    /// The register's value after the operation whose call is `entry`, and the open-ended
    /// write it needs placed first; nil if it cannot happen now.
    private func step(_ entry: Int, on value: Int, _ linearized: Bitset) -> (Int, openWrite: Int?)? {
        switch operations[operationOf[entry]].effect {
        case .write(let written):
            return (written, nil)
        case .read(let seen):
            if seen == value { return (value, nil) }
            // Any open-ended write of the value invoked by now will do (the others stay
            // as usable later), the first one is taken.
            var firstReturn = entry
            while isCall[firstReturn] { firstReturn = next[firstReturn] }
            let write = openWrites[seen]?.first { $0 < firstReturn && !linearized.contains(operationOf[$0]) }
            return write.map { (seen, $0) }
        }
    }

    /// The operations invoked before entry `stuck`, and the writes of the values their
    /// reads returned (taking a write away would make up a read of a value never written;
    /// those invoked later never came into the search).
    private func blocking(before stuck: Int) -> [Int] {
        let invoked = (1..<stuck).filter { isCall[$0] }.map { operationOf[$0] }
        let seen = Set(invoked.compactMap { if case .read(let value) = operations[$0].effect { value } else { nil } })
        let writersOfSeen = (stuck..<isCall.count).filter { isCall[$0] }.map { operationOf[$0] }.filter {
            if case .write(let value) = operations[$0].effect { seen.contains(value) } else { false }
        }
        return invoked + writersOfSeen
    }

    /// Takes a call and its return out of the list.
    private mutating func lift(_ call: Int) {
        for entry in [call, returnOf[call]] {
            next[previous[entry]] = next[entry]
            if next[entry] != Self.none { previous[next[entry]] = previous[entry] }
        }
    }

    /// Puts back what `lift(call)` took out, in reverse order.
    private mutating func unlift(_ call: Int) {
        for entry in [returnOf[call], call] {
            next[previous[entry]] = entry
            if next[entry] != Self.none { previous[next[entry]] = entry }
        }
    }

    private struct State: Hashable {
        let linearized: Bitset
        let value: Int
    }
}

/// A set of small integers as words of bits: cheap to copy and to hash.
struct Bitset: Hashable {
    private var words: [UInt64]

    init(count: Int) { words = Array(repeating: 0, count: (count + 63) / 64) }

    mutating func insert(_ member: Int) { words[member / 64] |= 1 << UInt64(member % 64) }

    mutating func remove(_ member: Int) { words[member / 64] &= ~(1 << UInt64(member % 64)) }

    func contains(_ member: Int) -> Bool { words[member / 64] & (1 << UInt64(member % 64)) != 0 }
}
