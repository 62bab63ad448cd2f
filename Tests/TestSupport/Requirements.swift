import Foundation
import XCTest

/// What a test needs from the machine it runs on: the built binaries, a tool, a Python
/// module. A skipped test counts as a pass, so a missing requirement may only skip where
/// nobody relies on the run: on a workstation. In CI (`CI=true`, set by the runner) it fails
/// the test instead of quietly shrinking the run.
public enum Requirement {
    /// Whether the tests run in CI, where nothing they need may be missing.
    public static var inCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Why a test that needed something failed in CI (the message says how to get it).
    public struct Missing: Error, CustomStringConvertible {
        public let description: String
    }
}

/// Goes on when `met`; otherwise skips the test (`XCTSkip`) on a workstation and fails it in
/// CI, with `missing` saying what is needed and how to get it.
public func require(_ met: Bool, _ missing: String, file: StaticString = #filePath, line: UInt = #line) throws {
    guard try available(met, missing) else { throw XCTSkip(missing, file: file, line: line) }
}

/// For a part of a test that runs only where something is there: `met` on a workstation,
/// and in CI true or a failure (what the test checks must not shrink there either).
public func available(_ met: Bool, _ missing: String) throws -> Bool {
    if !met, Requirement.inCI { throw Requirement.Missing(description: "in CI (CI=true): " + missing) }
    return met
}
