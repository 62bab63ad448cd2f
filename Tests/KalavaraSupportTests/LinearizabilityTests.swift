import Foundation
import TestSupport
import XCTest

/// `Linearizability.check` on small hand-made histories of key "k" (unless said), each
/// operation written as (value, invoked, responded). Every case that must pass has a near
/// twin that must fail, so neither answer can come from a checker that always says one thing.
final class LinearizabilityTests: XCTestCase {
    func testASequentialHistoryPasses() {
        assertLinearizable([
            read(nil, 0, 1), write("a", 2, 3), read("a", 4, 5), write("b", 6, 7), read("b", 8, 9),
            delete(10, 11), read(nil, 12, 13), write("a", 14, 15), read("a", 16, 17),
        ])
    }

    func testAStaleReadAfterALaterWriteCompletedFails() {
        assertViolation([write("a", 0, 1), write("b", 2, 3), read("a", 4, 5)], witness: [0, 1, 2])
    }

    func testAReadOfAValueNeverWrittenFails() {
        assertViolation([write("a", 0, 1), read("a", 2, 3), read("z", 4, 5)], witness: [2])
    }

    func testAReadConcurrentWithAWriteMaySeeTheOldOrTheNewValue() {
        for seen in ["a", "b"] {
            assertLinearizable([write("a", 0, 1), write("b", 2, 5), read(seen, 3, 4)])
        }
        assertViolation([write("a", 0, 1), write("b", 2, 5), read(nil, 3, 4)], witness: [0, 2])
    }

    func testReadingTheNewValueThenTheOldOneInSequenceFails() {
        // Two clients read while "b" is being written: once one has seen "b", a read that
        // starts after that cannot see "a" again.
        let history = [write("a", 0, 1), write("b", 2, 10), read("b", 3, 4), read("a", 5, 6)]
        assertViolation(history, witness: [0, 1, 2, 3])
        var overlapping = history
        overlapping[3].invoked = 3.5 // the reads overlap: "a" then "b" is an order
        assertLinearizable(overlapping)
    }

    func testAnUnknownWriteMayHaveTakenEffectOrNot() {
        assertLinearizable([write("a", 0, 1, .unknown), read("a", 5, 6)])
        assertLinearizable([write("a", 0, 1, .unknown), read(nil, 5, 6)])
        // Even long after the client gave up on it.
        assertLinearizable([write("a", 0, 1), write("b", 2, 3, .unknown), read("a", 4, 5), read("b", 6, 7)])
        // But once it has been seen it has happened, and not before it was invoked.
        assertViolation([write("a", 0, 1, .unknown), read("a", 5, 6), read(nil, 7, 8)], witness: [0, 1, 2])
        assertViolation([read("a", 0, 1), write("a", 2, 3, .unknown)], witness: [0, 1])
    }

    func testAnUnknownWriteTakesEffectAtMostOnce() {
        let once = [write("a", 0, 1, .unknown), read("a", 2, 3), write("b", 4, 5), read("a", 6, 7)]
        assertViolation(once, witness: [0, 1, 2, 3])
        assertLinearizable(once + [write("a", 0, 1, .unknown)])
    }

    func testAnUnknownReadConstrainsNothing() {
        assertLinearizable([write("a", 0, 1), operation(.read, 2, 3, .unknown)])
    }

    func testAReadAfterADeleteSeesNothing() {
        assertLinearizable([write("a", 0, 1), delete(2, 3), read(nil, 4, 5)])
        assertViolation([write("a", 0, 1), delete(2, 3), read("a", 4, 5)], witness: [0, 1, 2])
    }

    func testAFailedWriteDidNotHappen() {
        assertLinearizable([write("a", 0, 1, .failed), read(nil, 2, 3)])
        assertViolation([write("a", 0, 1, .failed), read("a", 2, 3)], witness: [1])
    }

    func testKeysAreIndependentRegisters() {
        assertLinearizable([write("a", 0, 1, key: "x"), write("b", 0, 1, key: "y"), read("a", 2, 3, key: "x")])
        assertViolation([write("a", 0, 1, key: "x"), read("a", 2, 3, key: "y")], key: "y", witness: [1])
    }

    func testAnOperationThatEndsWhenAnotherStartsCountsAsConcurrentWithIt() {
        assertLinearizable([write("a", 0, 1), write("b", 1, 2), read("a", 2, 3)])
    }

    func testTheViolationNamesItsOperations() {
        let result = Linearizability.check(numbered([write("a", 0, 1), write("b", 2, 3), read("a", 4, 5)]))
        guard case .violation(let violation) = result else { return XCTFail("passed: \(result)") }
        XCTAssertEqual(violation.description, """
            not linearizable on key "k"; these 3 operations alone cannot be ordered:
              #0 write "k" = "a" [0.000, 1.000] ok
              #1 write "k" = "b" [2.000, 3.000] ok
              #2 read "k" -> "a" [4.000, 5.000] ok
            """)
    }

    func testTheRecorderKeepsConcurrentClientsOperationsInInvocationOrder() {
        let recorder = HistoryRecorder()
        DispatchQueue.concurrentPerform(iterations: 8) { client in
            for round in 0..<50 {
                let id = recorder.invoke(key: "k\(client)", kind: .write(Array("\(round)".utf8)))
                if round < 49 { recorder.complete(id, .ok(read: nil)) }
            }
        }
        let operations = recorder.operations
        XCTAssertEqual(operations.map(\.id), Array(0..<400))
        XCTAssertEqual(operations.map(\.invoked), operations.map(\.invoked).sorted())
        XCTAssertEqual(operations.filter { $0.outcome == .unknown }.count, 8, "one left open per client")
        for operation in operations {
            XCTAssertEqual(operation.responded == .infinity, operation.outcome == .unknown)
            XCTAssertLessThanOrEqual(operation.invoked, operation.responded)
        }
        XCTAssertEqual(Linearizability.check(operations), .linearizable)
    }

    // MARK: - Building and judging histories

    private func operation(_ kind: HistoryOperation.Kind, _ invoked: Double, _ responded: Double,
                           _ outcome: HistoryOperation.Outcome, key: String = "k") -> HistoryOperation {
        HistoryOperation(id: -1, key: key, kind: kind, invoked: invoked, responded: responded, outcome: outcome)
    }

    private func write(_ value: String, _ invoked: Double, _ responded: Double,
                       _ outcome: HistoryOperation.Outcome = .ok(read: nil), key: String = "k") -> HistoryOperation {
        operation(.write(Array(value.utf8)), invoked, responded, outcome, key: key)
    }

    private func delete(_ invoked: Double, _ responded: Double) -> HistoryOperation {
        operation(.delete, invoked, responded, .ok(read: nil))
    }

    private func read(_ value: String?, _ invoked: Double, _ responded: Double, key: String = "k") -> HistoryOperation {
        operation(.read, invoked, responded, .ok(read: value.map { Array($0.utf8) }), key: key)
    }

    /// Ids are positions in the list.
    private func numbered(_ operations: [HistoryOperation]) -> [HistoryOperation] {
        operations.enumerated().map { var numbered = $1; numbered.id = $0; return numbered }
    }

    private func assertLinearizable(_ operations: [HistoryOperation], file: StaticString = #filePath, line: UInt = #line) {
        let result = Linearizability.check(numbered(operations))
        XCTAssertEqual(result, .linearizable, "\(result)", file: file, line: line)
    }

    /// Fails unless the check finds a violation on `key` explained by exactly the operations
    /// at positions `witness`.
    private func assertViolation(_ operations: [HistoryOperation], key: String = "k", witness: [Int],
                                 file: StaticString = #filePath, line: UInt = #line) {
        let result = Linearizability.check(numbered(operations))
        guard case .violation(let violation) = result else { return XCTFail("passed", file: file, line: line) }
        XCTAssertEqual(violation.key, key, file: file, line: line)
        XCTAssertEqual(violation.operations.map(\.id), witness, "\(violation)", file: file, line: line)
    }
}
