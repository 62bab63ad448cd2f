import Foundation
import Synchronization
import TestSupport
import XCTest

/// `Linearizability.check` on histories of a simulated linearizable store
/// (`SimulatedRegisters`): they must all pass, and each must fail once one read is made to
/// return a value it cannot have seen. Seeds are in the messages, to run a failure again.
final class LinearizabilityRandomTests: XCTestCase {
    func testHistoriesOfALinearizableStorePassAndFailWithOneImpossibleRead() {
        var witnessSizes: [Int] = []
        for seed in UInt64(1)...150 {
            var simulation = SimulatedRegisters()
            simulation.operations = 50 + Int(seed % 4) * 50
            simulation.keys = 1 + Int(seed % 3)
            simulation.clients = 1 + Int(seed % 8)
            let history = simulation.history(seed: seed)
            let result = Linearizability.check(history)
            XCTAssertEqual(result, .linearizable, "seed \(seed): \(result)")

            guard let (mutated, read) = SimulatedRegisters.withImpossibleRead(history, seed: seed) else { continue }
            guard case .violation(let violation) = Linearizability.check(mutated) else {
                XCTFail("seed \(seed): read #\(read) made impossible, yet the history passed")
                continue
            }
            XCTAssertEqual(violation.key, history[read].key, "seed \(seed)")
            // The explanation must stand on its own.
            XCTAssertNotEqual(Linearizability.check(violation.operations), .linearizable, "seed \(seed): \(violation)")
            XCTAssert(violation.operations.allSatisfy { mutated[$0.id] == $0 }, "seed \(seed)")
            witnessSizes.append(violation.operations.count)
        }
        XCTAssertGreaterThan(witnessSizes.count, 140)
        guard let smallest = witnessSizes.min(), let largest = witnessSizes.max() else { return }
        print("explanations of an impossible read: \(smallest)...\(largest) operations,",
              "mean \(Double(witnessSizes.reduce(0, +)) / Double(witnessSizes.count))")
    }

    /// The size a failover test records: 2,000 operations on 20 keys from 8 clients.
    func testTwoThousandOperationsFromEightClientsAreCheckedQuickly() throws {
        try assertCheckedQuickly(SimulatedRegisters(operations: 2000, keys: 20, clients: 8), seed: 2024)
    }

    /// The hard case for the search: all 8 clients on one key.
    func testOneKeyShared8WaysIsCheckedQuickly() throws {
        try assertCheckedQuickly(SimulatedRegisters(operations: 1000, keys: 1, clients: 8), seed: 8)
    }

    /// Checks a simulated history as it is and with one impossible read, each within a
    /// deadline, and prints the times. Without its memoization the search is exponential in
    /// the concurrency on a key; a deadline, not a measurement, catches that coming back.
    private func assertCheckedQuickly(_ simulation: SimulatedRegisters, seed: UInt64) throws {
        let history = simulation.history(seed: seed)
        let (mutated, _) = try XCTUnwrap(SimulatedRegisters.withImpossibleRead(history, seed: seed))
        let (passed, passTime) = try checkWithDeadline(history)
        XCTAssertEqual(passed, .linearizable)
        let (failed, failTime) = try checkWithDeadline(mutated)
        XCTAssertNotEqual(failed, .linearizable)
        print("\(simulation.operations) operations, \(simulation.keys) keys, \(simulation.clients) clients:",
              "linearizable in \(passTime), with an impossible read (and its explanation) in \(failTime)")
    }

    /// Checks on another thread and fails the test if that takes over a minute (the thread
    /// is then left to the end of the test process: a runaway search cannot be stopped).
    private func checkWithDeadline(_ history: [HistoryOperation]) throws -> (Linearizability.Result, Duration) {
        let check = BackgroundCheck()
        Thread { check.run(history) }.start()
        guard check.done.wait(timeout: .now() + 60) == .success else { throw DeadlineExceeded() }
        return try XCTUnwrap(check.outcome.withLock { $0 })
    }
}

/// A check run on another thread: its result, its time, and when it is there.
private final class BackgroundCheck: Sendable {
    let outcome = Mutex<(Linearizability.Result, Duration)?>(nil)
    let done = DispatchSemaphore(value: 0)

    func run(_ history: [HistoryOperation]) {
        let start = ContinuousClock.now
        let result = Linearizability.check(history)
        outcome.withLock { $0 = (result, start.duration(to: .now)) }
        done.signal()
    }
}

private struct DeadlineExceeded: Error, CustomStringConvertible {
    var description: String { "the check took over a minute: has the search gone exponential?" }
}
