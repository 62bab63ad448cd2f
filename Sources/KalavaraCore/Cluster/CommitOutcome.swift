import Foundation
import KalavaraHTTP

/// A commit's operation: `op=` of `POST /internal/commit`.
public enum CommitOperation: String, Sendable {
    case put, delete
}

/// What the master decided about a commit (`POST /internal/commit`), as a value: the
/// commit rules (`Master.commit`) return it, `response` is its one HTTP form, and
/// `init?(status:headers:)` reads it back from an answer — the volume from the master's,
/// the gateway from the volume's, which passes a refusal on. Nothing decides on the text.
///
/// On the wire: the status (`200` accepted, `409` refused), a one-line reason for people,
/// and `Kalavara-Outcome: KIND[; op=put|delete][; version=N][; volume=URL]` for programs;
/// a write that replaced a value adds `Kalavara-Previous-Version`.
public enum CommitOutcome: Equatable, Sendable {
    /// A write recorded; `previous` is the version of the value it replaced, if it replaced one.
    case committed(previous: UInt64?)
    /// A write recorded before with exactly this content and these holders: a volume
    /// retrying after a lost answer.
    case alreadyCommitted
    /// A delete recorded: the key's tombstone now stands.
    case deleted
    /// The key is deleted already, at this version or a newer one.
    case alreadyDeleted
    /// The index has no record of the key.
    case nothingToDelete
    /// A newer version of the key, or its fence, rules this write or delete out: `by` is
    /// that version. Concurrent writers converge on the newest version the master issued.
    case superseded(by: UInt64, operation: CommitOperation)
    /// The ticket is older than the ticket lifetime: a late write may not resurrect a key
    /// whose tombstone has expired.
    case expired
    /// This version is committed already, with other content or holders: a version is
    /// never rewritten.
    case conflict(version: UInt64)
    /// A holder the commit names has left the cluster (the write's ticket predates the end
    /// of a drain).
    case volumeRemoved(String)

    /// The kind, as `Kalavara-Outcome` names it.
    enum Kind: String, Sendable, CaseIterable {
        case committed
        case alreadyCommitted = "already-committed"
        case deleted
        case alreadyDeleted = "already-deleted"
        case nothingToDelete = "nothing-to-delete"
        case superseded, expired, conflict
        case volumeRemoved = "volume-removed"
    }

    var kind: Kind {
        switch self {
        case .committed: .committed
        case .alreadyCommitted: .alreadyCommitted
        case .deleted: .deleted
        case .alreadyDeleted: .alreadyDeleted
        case .nothingToDelete: .nothingToDelete
        case .superseded: .superseded
        case .expired: .expired
        case .conflict: .conflict
        case .volumeRemoved: .volumeRemoved
        }
    }

    /// Whether the index holds the change now (`200`); otherwise it is refused for good (`409`).
    var isAccepted: Bool {
        switch self {
        case .committed, .alreadyCommitted, .deleted, .alreadyDeleted, .nothingToDelete: true
        case .superseded, .expired, .conflict, .volumeRemoved: false
        }
    }

    var status: Int { isAccepted ? 200 : 409 }

    /// The version of the value a write replaced, if it replaced one.
    var replaced: UInt64? {
        if case .committed(let previous) = self { previous } else { nil }
    }

    /// The one-line reason, for people and logs.
    var reason: String {
        switch self {
        case .committed, .alreadyCommitted: "committed"
        case .deleted: "deleted"
        case .alreadyDeleted: "already deleted"
        case .nothingToDelete: "nothing to delete"
        case .superseded(let newer, let operation):
            "a newer version (\(newer)) rules this \(operation == .put ? "write" : "delete") out"
        case .expired: "ticket expired: commit arrived after the ticket lifetime"
        case .conflict(let version): "version \(version) is already committed with other content or holders"
        case .volumeRemoved(let url): "volume \(url) has left the cluster"
        }
    }

    /// The `Kalavara-Outcome` value: the kind, then what the reason names.
    var headerValue: String {
        switch self {
        case .superseded(let newer, let operation): "superseded; op=\(operation.rawValue); version=\(newer)"
        case .conflict(let version): "conflict; version=\(version)"
        case .volumeRemoved(let url): "volume-removed; volume=\(url)"
        default: kind.rawValue
        }
    }

    /// The answer that carries it. A volume passing the master's refusal on to its client
    /// names itself in `context` (`master refused the commit`), which leads the reason.
    func response(context: String? = nil) -> HTTPResponse {
        var response = HTTPResponse.text(status, context.map { "\($0): \(reason)" } ?? reason)
        response.headers.set(VolumeHeaders.outcome, headerValue)
        if let replaced { response.headers.set(VolumeHeaders.previousVersion, String(replaced)) }
        return response
    }

    /// The outcome an answer carries, from its status and headers; nil when it carries
    /// none (a malformed commit, a server error, an answer from before the header) or one
    /// that does not fit its status.
    init?(status: Int, headers: HTTPHeaders) {
        guard let value = headers[VolumeHeaders.outcome] else { return nil }
        let fields = value.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let first = fields.first, let kind = Kind(rawValue: first) else { return nil }
        var parameters: [Substring: Substring] = [:]
        for field in fields.dropFirst() {
            guard let equals = field.firstIndex(of: "=") else { return nil }
            parameters[field[..<equals]] = field[field.index(after: equals)...]
        }
        let version = parameters["version"].flatMap { UInt64($0) }
        switch kind {
        case .committed: self = .committed(previous: headers[VolumeHeaders.previousVersion].flatMap(UInt64.init))
        case .alreadyCommitted: self = .alreadyCommitted
        case .deleted: self = .deleted
        case .alreadyDeleted: self = .alreadyDeleted
        case .nothingToDelete: self = .nothingToDelete
        case .superseded:
            guard let version, let operation = parameters["op"].flatMap({ CommitOperation(rawValue: String($0)) }) else { return nil }
            self = .superseded(by: version, operation: operation)
        case .expired: self = .expired
        case .conflict:
            guard let version else { return nil }
            self = .conflict(version: version)
        case .volumeRemoved:
            guard let url = parameters["volume"] else { return nil }
            self = .volumeRemoved(String(url))
        }
        guard self.status == status else { return nil }
    }

    public init?(_ answer: ClientResponse) {
        self.init(status: answer.status, headers: answer.headers)
    }
}

/// What `POST /internal/resolve` found of a version a volume holds uncommitted, carried in
/// `Kalavara-Resolution`: committed (for this volume), or an orphan that will never be.
public enum Resolution: String, Sendable {
    case committed, orphan

    var response: HTTPResponse {
        var response = HTTPResponse.text(200, rawValue)
        response.headers.set(VolumeHeaders.resolution, rawValue)
        return response
    }

    /// The verdict an answer carries; nil when it has none (an error, "no verdict yet").
    init?(_ answer: ClientResponse) {
        guard answer.status == 200, let verdict = answer.headers[VolumeHeaders.resolution].flatMap(Resolution.init(rawValue:)) else {
            return nil
        }
        self = verdict
    }
}

/// What `POST /internal/wanted` answers for each file a volume's scrub asks about, a line
/// each: `keep`, `drop` (the index knows a newer version or a delete of the key), or
/// `unknown` (no record: a rebuild may still need the file).
enum WantedVerdict: String, Sendable {
    case keep, drop, unknown
}
