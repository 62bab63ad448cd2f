import Foundation
import KalavaraHTTP
import KalavaraSupport
import Prometheus

/// The volume's side of the conversation with the master: commits, purge reports and
/// registration heartbeats.
///
/// Sendable by hand: the learnt URLs are behind `lock`; `heartbeat` is set once by
/// `startHeartbeat` (before anything can call `stop`) and its state is the loop's status.
final class MasterLink: @unchecked Sendable {
    /// What came of a commit sent to the master.
    enum CommitReply: Equatable {
        /// The master recorded it (`outcome.isAccepted`).
        case accepted(CommitOutcome)
        /// The master said no for good.
        case refused(Refusal)
        /// No answer, or a server error: the outcome is unknown.
        case unreachable(String)
    }

    /// The master's no to a commit.
    enum Refusal: Equatable {
        /// A decision of the commit rules (a newer version exists, the ticket expired...).
        case decided(CommitOutcome)
        /// A `4xx` that carries no outcome: a malformed commit the master would not judge.
        case unjudged(status: Int, reason: String)

        /// The client's answer: the master's refusal passed on (`409`, its
        /// `Kalavara-Outcome` with it), or `502` for a commit it would not judge.
        /// `operation` names what was refused (`commit`, `delete`).
        func answer(_ operation: String) -> HTTPResponse {
            let context = "master refused the \(operation)"
            switch self {
            case .decided(let outcome): return outcome.response(context: context)
            case .unjudged(let status, let reason): return .text(status == 409 ? 409 : 502, "\(context): \(reason)")
            }
        }
    }

    /// What the master said of a version this volume holds uncommitted (`resolve`).
    /// The master's answer about a version this volume holds uncommitted.
    enum ResolveAnswer: Equatable {
        /// Committed: the version stays.
        case committed
        /// An orphan: it never will be committed.
        case orphan
        /// A question the master would not judge (a `4xx`: a bad key, an unknown volume).
        case unjudged(status: Int, reason: String)
        /// No answer, or a server error: the outcome is unknown.
        case unreachable(String)
    }

    /// The masters (`-m`, a comma list, and those heard of): calls go to the group's leader.
    let masters: MasterDirectory
    private let configuredMaster: String?
    private let configuredSelf: String?
    /// Calls to the master: 5 s, well under a client's patience.
    private let client: HTTPClient
    /// Round trip of each commit (write or delete) to the master.
    private let commitRoundTrips: DurationHistogram
    /// Guards `learnedSelf`.
    private let lock = NSLock()
    private var learnedSelf: String?
    /// How long a commit keeps trying when several masters are known: past a leader's lease
    /// (5 s by default) and a takeover, so a failover delays a client's PUT, never fails it.
    static let commitPatience = 15.0
    private var heartbeat: BackgroundLoop<Registration>?

    /// Whether the last registration worked, and when one last did (monotonic seconds).
    struct Registration: Sendable {
        var registered: Bool?
        var lastSuccess = -Double.infinity
    }

    init(configuredMasters: [String], selfURL: String?, metrics: Metrics, secret: ClusterSecret? = nil) {
        client = HTTPClient(timeout: 5, signer: secret)
        masters = MasterDirectory(configuredMasters)
        configuredMaster = configuredMasters.first
        self.configuredSelf = selfURL
        commitRoundTrips = metrics.histogram("kalavara_commit_round_trip_seconds",
                                             "Time from sending a commit to the master to reading its answer")
    }

    /// Remembers a master's URL from its health checks or tickets.
    func learnMaster(_ url: String) { masters.learn(url) }

    /// Remembers the URL the master knows this volume by (unless `-b` set it): from the
    /// master's health checks (signed ones, in a signed cluster), or in an open cluster from
    /// the first ticket that reaches it before any check did. Once learnt it is kept: a
    /// signed check says which volume it was meant for but not which one received it, so a
    /// check to another volume replayed here must not turn this volume into that one (which
    /// would make it refuse its own tickets and act on the other's). `-b` avoids the question.
    func learnSelf(_ url: String) {
        guard configuredSelf == nil, VolumeRegistry.normalize(url) == url else { return }
        lock.lock()
        let known = learnedSelf
        if known == nil { learnedSelf = url }
        lock.unlock()
        if let known, known != url {
            Log.error("a health check names this volume \(url), but it is \(known): ignored (set -b to be sure)")
        }
    }

    /// This volume's URL as the master knows it (`-b`, or learnt from a health check), once known.
    var selfURL: String? {
        lock.lock()
        defer { lock.unlock() }
        return configuredSelf ?? learnedSelf
    }

    /// The master and this volume's URL there, once both are known.
    var identity: (master: String, me: String)? {
        guard let master = masters.preferred, let me = selfURL else { return nil }
        return (master, me)
    }

    /// Where a ticket's write is committed: its issuer, or the leader of its group.
    func masterURL(for ticket: PlacementTicket) -> String? {
        if let issuer = ticket.master { masters.learn(issuer) }
        return masters.preferred
    }

    /// A call that changes the index, to the leader (see `MasterDirectory`).
    private func call(_ path: String, _ parameters: QueryParameters, body: [UInt8] = [], patience: Double = 0) throws -> ClientResponse {
        try masters.send(client, "POST", "\(path)?\(parameters.encoded)", body: body, patience: masters.isGroup ? patience : 0)
    }

    func commitWrite(_ key: Key, _ ticket: PlacementTicket, size: Int, checksum: UInt32, md5: [UInt8]? = nil,
                     attributes: [UInt8]? = nil) -> CommitReply {
        var parameters = QueryParameters()
        parameters.add("op", CommitOperation.put.rawValue)
        parameters.add("key", bytes: key.bytes)
        parameters.add("ver", String(ticket.version))
        parameters.add("size", String(size))
        parameters.add("crc", String(checksum, radix: 16))
        parameters.add("h", ticket.holders.joined(separator: ","))
        if let md5 { parameters.add("md5", Hex.encode(md5)) }
        if let attributes { parameters.add("attrs", bytes: attributes) }
        if let requestID = ticket.requestID { parameters.add("rid", requestID) }
        return commit(parameters, ticket)
    }

    func commitDelete(_ key: Key, _ ticket: PlacementTicket) -> CommitReply {
        var parameters = QueryParameters()
        parameters.add("op", CommitOperation.delete.rawValue)
        parameters.add("key", bytes: key.bytes)
        parameters.add("ver", String(ticket.version))
        return commit(parameters, ticket)
    }

    private func commit(_ parameters: QueryParameters, _ ticket: PlacementTicket) -> CommitReply {
        commitRoundTrips.time {
            let response: ClientResponse
            do {
                response = try post("/internal/commit", parameters, ticket)
            } catch {
                return .unreachable("\(error)")
            }
            if let outcome = CommitOutcome(response) { return outcome.isAccepted ? .accepted(outcome) : .refused(.decided(outcome)) }
            guard (400..<500).contains(response.status) else { return .unreachable("master answered \(response.status)") }
            return .refused(.unjudged(status: response.status, reason: response.text.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
    }

    /// Tells the master, in one call, that this volume holds no copy of each key older than
    /// its version any more (`POST /internal/purged?h=ME` with `VERSION KEY` lines). With
    /// `master` and `holder` nil, the volume's known identity is used; unknown, nothing is
    /// sent (the master's removal queue asks again).
    func reportRemoved(_ removed: [(key: Key, below: UInt64)], master: String?, holder: String?) {
        guard !removed.isEmpty else { return }
        if let master { masters.learn(master) }
        guard let master = masters.preferred, let me = holder ?? selfURL else { return }
        for start in stride(from: 0, to: removed.count, by: Self.reportBatch) {
            var parameters = QueryParameters()
            parameters.add("h", me)
            let body = removed[start..<min(start + Self.reportBatch, removed.count)]
                .map { "\($0.below) \($0.key.pathComponent)" }.joined(separator: "\n")
            if (try? call("/internal/purged", parameters, body: Array(body.utf8)))?.status != 200 {
                Log.warning("could not report \(removed.count) removals to \(master); its removal queue asks again")
                return
            }
        }
    }

    /// Removals per report at most (the master reads at most 4 MiB of one).
    static let reportBatch = 1024

    /// Tells the master this volume's copy of `key` at `version` failed its checksum.
    func reportCorrupt(_ key: Key, version: UInt64) {
        guard let (_, me) = identity else {
            Log.warning("cannot report corrupt \(key) v\(version): the master is not known yet")
            return
        }
        var parameters = QueryParameters()
        parameters.add("key", bytes: key.bytes)
        parameters.add("ver", String(version))
        parameters.add("h", me)
        if (try? call("/internal/corrupt", parameters))?.status != 200 {
            Log.warning("could not report corrupt \(key) v\(version) to the master; the scrub reports it again")
        }
    }

    /// Tells the master about a file whose header no longer names its key.
    func reportDamaged(fileNamed name: String) {
        guard let (_, me) = identity else { return }
        var parameters = QueryParameters()
        parameters.add("file", name)
        parameters.add("h", me)
        if (try? call("/internal/corrupt", parameters))?.status != 200 {
            Log.warning("could not report damaged file \(name) to the master")
        }
    }

    /// Asks the master which of these files are still wanted (a verdict per entry, in
    /// order); nil when it cannot say now.
    func wanted(_ files: [(key: Key, version: UInt64)]) -> [WantedVerdict]? {
        guard let (_, me) = identity else { return nil }
        var parameters = QueryParameters()
        parameters.add("h", me)
        let body = files.map { "\($0.version) \($0.key.pathComponent)" }.joined(separator: "\n")
        guard let answer = try? call("/internal/wanted", parameters, body: Array(body.utf8)), answer.status == 200 else { return nil }
        let verdicts = answer.text.split(separator: "\n").compactMap { WantedVerdict(rawValue: String($0)) }
        return verdicts.count == files.count ? verdicts : nil
    }

    /// Tells the master that `holder` removed its copies of `key` older than the ticket's
    /// version. Returns whether the master recorded it (if not, its removal queue asks again).
    @discardableResult
    func reportPurged(_ key: Key, _ ticket: PlacementTicket, holder: String) -> Bool {
        var parameters = QueryParameters()
        parameters.add("key", bytes: key.bytes)
        parameters.add("ver", String(ticket.version))
        parameters.add("h", holder)
        return (try? post("/internal/purged", parameters, ticket))?.status == 200
    }

    /// Asks the master whether a version this volume holds uncommitted was committed.
    func resolve(_ key: Key, version: UInt64, master: String, me: String) -> ResolveAnswer {
        var parameters = QueryParameters()
        parameters.add("key", bytes: key.bytes)
        parameters.add("ver", String(version))
        parameters.add("h", me)
        masters.learn(master)
        do {
            let response = try call("/internal/resolve", parameters)
            switch Resolution(response) {
            case .committed?: return .committed
            case .orphan?: return .orphan
            case nil where (400..<500).contains(response.status):
                return .unjudged(status: response.status, reason: response.text.trimmingCharacters(in: .whitespacesAndNewlines))
            case nil: return .unreachable("master answered \(response.status) without a resolution")
            }
        } catch {
            return .unreachable("master \(master) unreachable: \(error)")
        }
    }

    /// Why a call to the master got no answer.
    private struct Unreachable: Error, CustomStringConvertible {
        let description: String
    }

    /// Sends a ticket's call to the leader: the master that issued the ticket, or another of
    /// its group (`-m`, health checks) if it no longer leads.
    private func post(_ path: String, _ parameters: QueryParameters, _ ticket: PlacementTicket) throws -> ClientResponse {
        guard let master = masterURL(for: ticket) else {
            throw Unreachable(description: "no master known: start the volume with -m or go through the master")
        }
        do {
            return try call(path, parameters, patience: Self.commitPatience)
        } catch {
            throw Unreachable(description: "master \(master) unreachable: \(error)")
        }
    }

    /// With `-m` and `-b`: register now and every `interval` seconds, so the master knows
    /// this volume and sees it alive even after the master restarts. Until the first
    /// registration succeeds (the master may start later), it retries every second.
    func startHeartbeat(interval: Double) {
        guard let master = configuredMaster, let selfURL = configuredSelf else { return }
        let loop = BackgroundLoop("heartbeat", schedule: .every(min(1, interval)), status: Registration())
        loop.start { [client, masters] in
            let registered = loop.status.registered, lastSuccess = loop.status.lastSuccess
            guard registered != true || monotonicSeconds() - lastSuccess >= interval else { return }
            var headers = HTTPHeaders()
            headers.add(VolumeHeaders.heartbeat, "1")
            let answer = try? masters.send(client, "POST", "/admin/add-volume", headers: headers, body: Array(selfURL.utf8), patience: 0)
            let ok = answer?.status == 200
            loop.report { $0 = Registration(registered: ok, lastSuccess: ok ? monotonicSeconds() : $0.lastSuccess) }
            if ok != registered {
                if ok {
                    Log.info("registered with master \(masters.preferred ?? master) as \(selfURL)")
                } else if let answer {
                    // A drained volume's registration is refused (410) until an operator adds it again.
                    Log.warning("master \(masters.preferred ?? master) refused the registration: \(answer.status) "
                                + answer.text.trimmingCharacters(in: .whitespacesAndNewlines))
                } else if registered == true {
                    Log.warning("cannot reach master \(masters.known.joined(separator: ",")); retrying")
                }
            }
        }
        loop.wake() // the first registration at once
        heartbeat = loop
    }

    func stop() { heartbeat?.stop() }
}
