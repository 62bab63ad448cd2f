import Foundation
@testable import KalavaraHTTP
import KalavaraSupport
import XCTest

/// The connection state machine on its own: every phase × every event that matters, the
/// phase it leads to and the action it asks for; then the timeouts, and the eviction
/// handshake (`IdleMark`) against a request claiming the connection.
final class ConnectionStateTests: XCTestCase {
    /// A phase in a few characters, so a table row reads as one line.
    private func describe(_ state: ConnectionState) -> String {
        switch state.phase {
        case .idle(let since): return "idle(\(Int(since)))"
        case .readingHead(let startedAt, let scanned): return "reading(\(Int(startedAt)),\(scanned))"
        case .answering: return "answering"
        case .handedOff:
            switch state.job {
            case nil: return "handedOff(nothing)"
            case .request: return "handedOff(request)"
            case .answer: return "handedOff(answer)"
            case .pendingOutput(_, let closeAfter): return "handedOff(pending,\(closeAfter))"
            case .badHead(let error): return "handedOff(bad \(error.status))"
            }
        case .working: return "working"
        case .closed: return "closed"
        }
    }

    private var phases: [(String, ConnectionState)] { [
        ("idle", ConnectionState(.idle(since: 100))),
        ("fresh", ConnectionState(acceptedAt: 100)),
        ("reading", ConnectionState(.readingHead(startedAt: 110, scanned: 7))),
        ("answering", ConnectionState(.answering)),
        ("handedOff", ConnectionState(.handedOff, job: .pendingOutput([1], closeAfter: false))),
        ("working", ConnectionState(.working)),
        ("closed", ConnectionState(.closed)),
    ] }

    private typealias Event = (String, (inout ConnectionState) -> ConnectionState.Action)
    private static var badRequest: HTTPError { HTTPError(400, "bad") }
    private var events: [Event] { [
        ("bytesPending", { $0.bytesPending(now: 120) }),
        ("nothingPending", { $0.nothingPending(now: 120) }),
        ("headIncomplete", { $0.headIncomplete(scanned: 9) }),
        ("headComplete", { $0.headComplete(claimed: true) }),
        ("headComplete-evicted", { $0.headComplete(claimed: false) }),
        ("headRefused", { $0.headRefused(Self.badRequest, claimed: true) }),
        ("headRefused-evicted", { $0.headRefused(Self.badRequest, claimed: false) }),
        ("answered-keep", { $0.answered(keepAlive: true, now: 120) }),
        ("answered-close", { $0.answered(keepAlive: false, now: 120) }),
        ("handOff", { $0.handOff(.pendingOutput([], closeAfter: true)) }),
        ("evictionSeen", { $0.evictionSeen() }),
        ("lost", { $0.lost() }),
        ("takeWork", { $0.takeWork() == nil ? .close : .handOff }),
        ("workerIdle", { $0.workerIdle(stopping: false) }),
        ("workerIdle-stopping", { $0.workerIdle(stopping: true) }),
        ("watched", { $0.watched(now: 120); return .wait }),
    ] }

    /// phase → event → (action, phase after), for the events a phase can take. Any other
    /// pair is a bug in the caller, and the answer to it is to close: `(.close, "closed")`.
    /// `evictionSeen` and `lost` close from every phase.
    private var expected: [String: [String: (ConnectionState.Action, String)]] { [
        "idle": [
            "bytesPending": (.scan(from: 0), "reading(120,0)"),
            "nothingPending": (.wait, "idle(100)"),
            "watched": (.wait, "idle(100)"),
        ],
        "fresh": [
            "bytesPending": (.scan(from: 0), "reading(120,0)"),
            "nothingPending": (.wait, "idle(100)"),
            "watched": (.wait, "idle(100)"),
        ],
        "reading": [
            // A head in progress keeps its start and its scan position.
            "bytesPending": (.scan(from: 7), "reading(110,7)"),
            // Only line breaks came: idle since the head began, not since now.
            "nothingPending": (.wait, "idle(110)"),
            "headIncomplete": (.wait, "reading(110,9)"),
            "headComplete": (.serve(firstHead: false), "answering"),
            "headRefused": (.handOff, "handedOff(bad 400)"),
            "watched": (.wait, "idle(120)"),
        ],
        "answering": [
            // The next pipelined request: its head starts now.
            "bytesPending": (.scan(from: 0), "reading(120,0)"),
            "nothingPending": (.wait, "idle(120)"),
            "answered-keep": (.next, "idle(120)"),
            "handOff": (.handOff, "handedOff(pending,true)"),
            "watched": (.wait, "idle(120)"),
        ],
        "handedOff": [
            "takeWork": (.handOff, "working"),
            "watched": (.wait, "idle(120)"),
        ],
        "working": [
            // Idle on the worker: back to the loop, unless the server is stopping.
            "workerIdle": (.giveBack, "working"),
            "watched": (.wait, "idle(120)"),
        ],
        "closed": [
            "watched": (.wait, "closed"),
        ],
    ] }

    func testEveryPhaseAndEvent() {
        for (phaseName, start) in phases {
            for (eventName, apply) in events {
                var state = start
                let action = apply(&state)
                let want = expected[phaseName]?[eventName] ?? (.close, "closed")
                XCTAssertEqual(action, want.0, "\(phaseName) × \(eventName): action")
                XCTAssertEqual(describe(state), want.1, "\(phaseName) × \(eventName): phase")
                if case .handedOff = state.phase {
                    XCTAssertNotNil(state.job, "\(phaseName) × \(eventName): handed off with no job")
                } else {
                    XCTAssertNil(state.job, "\(phaseName) × \(eventName): a job outside handedOff")
                }
            }
        }
        // Fresh until the first head is complete, then not.
        var fresh = ConnectionState(acceptedAt: 100)
        _ = fresh.bytesPending(now: 101)
        XCTAssertEqual(fresh.headComplete(claimed: true), .serve(firstHead: true))
    }

    /// What the evictor sees: idle since when, or nil while busy or closed.
    func testIdleSinceIsWhatTheEvictorSees() {
        let cases: [(ConnectionState, Double?)] = [
            (ConnectionState(.idle(since: 100)), 100),
            (ConnectionState(.readingHead(startedAt: 110, scanned: 3)), 110),
            (ConnectionState(.answering), nil),
            (ConnectionState(.handedOff, job: .badHead(Self.badRequest)), nil),
            (ConnectionState(.working), nil),
            (ConnectionState(.closed), nil),
        ]
        for (state, since) in cases { XCTAssertEqual(state.idleSince, since, describe(state)) }
    }

    /// Freshness lasts until the first complete head, and only the first says so.
    func testTheFirstHeadEndsFreshness() {
        var state = ConnectionState(acceptedAt: 100)
        XCTAssertEqual(state.freshSince, 100)
        XCTAssertEqual(state.bytesPending(now: 101), .scan(from: 0))
        XCTAssertEqual(state.headComplete(claimed: true), .serve(firstHead: true))
        XCTAssertNil(state.freshSince)
        XCTAssertEqual(state.answered(keepAlive: true, now: 102), .next)
        XCTAssertEqual(state.bytesPending(now: 103), .scan(from: 0))
        XCTAssertEqual(state.headComplete(claimed: true), .serve(firstHead: false))
        // Handed to a worker, and back: the worker's idle goes back to the loop.
        XCTAssertEqual(state.handOff(.pendingOutput([1], closeAfter: false)), .handOff)
        XCTAssertNotNil(state.takeWork())
        XCTAssertEqual(state.workerIdle(stopping: false), .giveBack)
        state.watched(now: 200)
        XCTAssertEqual(describe(state), "idle(200)")
    }

    /// Line breaks reset a head's scan but not its clock.
    func testLineBreaksKeepTheHeadsClock() {
        var state = ConnectionState(.readingHead(startedAt: 110, scanned: 7))
        state.lineBreaksSkipped()
        XCTAssertEqual(describe(state), "reading(110,0)")
        var idle = ConnectionState(.idle(since: 100))
        idle.lineBreaksSkipped()
        XCTAssertEqual(describe(idle), "idle(100)")
    }

    func testTimeouts() {
        // (phase, fresh since, now, action); read timeout 5, idle timeout 30, head timeout 10.
        let rows: [(ConnectionState.Phase, Double?, Double, ConnectionState.Action)] = [
            (.idle(since: 100), nil, 129, .wait),
            (.idle(since: 100), nil, 131, .close),
            // A fresh connection that sent nothing: the head timeout, not the idle one.
            (.idle(since: 100), 100, 109, .wait),
            (.idle(since: 100), 100, 111, .close),
            // A head trickling in: the read timeout from its first byte.
            (.readingHead(startedAt: 120, scanned: 3), nil, 124, .wait),
            (.readingHead(startedAt: 120, scanned: 3), nil, 125.5, .answerTimeoutAndClose),
            // A fresh connection's first head: the head timeout from the accept, however it trickles.
            (.readingHead(startedAt: 108, scanned: 3), 100, 111, .answerTimeoutAndClose),
            // Whatever is busy is never timed out by the loop.
            (.answering, 100, 10_000, .wait),
            (.handedOff, 100, 10_000, .wait),
            (.working, nil, 10_000, .wait),
            (.closed, nil, 10_000, .wait),
        ]
        for (phase, fresh, now, want) in rows {
            var state = ConnectionState(phase, freshSince: fresh)
            let before = describe(state)
            let action = state.timeoutCheck(now: now, readTimeout: 5, idleTimeout: 30, headTimeout: 10)
            XCTAssertEqual(action, want, "\(before) fresh \(fresh.map { "\($0)" } ?? "-") at \(now)")
            XCTAssertEqual(describe(state), want == .wait ? before : "closed")
        }
    }

    /// The eviction handshake against a request claiming the connection, both orders and a
    /// stale sighting: whoever comes second sees the other's mark, and the state machine
    /// serves the request only if the owner's claim won.
    func testEvictionAgainstAClaimingRequest() {
        // The evictor first: the owner's claim fails, and the request is dropped unserved.
        do {
            let mark = IdleMark(idleSince: 100)
            var state = ConnectionState(.readingHead(startedAt: 100, scanned: 0))
            XCTAssertTrue(mark.evict(ifIdleSince: 100))
            XCTAssertEqual(state.headComplete(claimed: mark.publish(idleSince: nil)), .close)
            XCTAssertEqual(describe(state), "closed")
            XCTAssertTrue(mark.isEvicted)
            XCTAssertFalse(mark.publish(idleSince: 200), "an evicted mark never becomes idle again")
        }
        // The request first: the evictor's exchange fails, and the request is served.
        do {
            let mark = IdleMark(idleSince: 100)
            var state = ConnectionState(.readingHead(startedAt: 100, scanned: 0))
            XCTAssertEqual(state.headComplete(claimed: mark.publish(idleSince: nil)), .serve(firstHead: false))
            XCTAssertNil(mark.idleSince)
            XCTAssertFalse(mark.evict(ifIdleSince: 100))
            XCTAssertFalse(mark.isEvicted)
            // Answered and idle again: evictable again, from its new idle time only.
            XCTAssertEqual(state.answered(keepAlive: true, now: 150), .next)
            XCTAssertTrue(mark.publish(idleSince: state.idleSince))
            XCTAssertFalse(mark.evict(ifIdleSince: 100), "a stale sighting does not evict")
            XCTAssertTrue(mark.evict(ifIdleSince: 150))
            // The loop's sweep then sees it.
            XCTAssertEqual(state.evictionSeen(), .close)
        }
        // A head too large to buffer is claimed the same way before a worker answers it.
        do {
            let mark = IdleMark(idleSince: 100)
            var state = ConnectionState(.readingHead(startedAt: 100, scanned: 0))
            XCTAssertTrue(mark.evict(ifIdleSince: 100))
            XCTAssertEqual(state.headRefused(Self.badRequest, claimed: mark.publish(idleSince: nil)), .close)
        }
    }
}
