import Foundation
import KalavaraHTTP
import KalavaraSupport

/// The masters a daemon talks to, and which of them leads. Given any of them (`-m a,b`,
/// or learnt from their health checks and tickets), a call that changes the index reaches
/// the leader: a standby's `307` names it, and while a master is unreachable or answers
/// `503` (no leader yet, or one that no longer surely leads) the others are tried, again
/// and again until `patience` runs out. Calls sent again must be idempotent, as commits are.
///
/// Given one master of a group, the others are learnt from its `GET /admin/masters` (at the
/// first answer, then every `learnEvery` seconds), so a daemon started with one master's URL
/// still reaches the group when that master dies. With one master known nothing is retried:
/// a single master behaves exactly as before.
public final class MasterDirectory: @unchecked Sendable {
    private let lock = NSLock()
    /// Configured first, learnt ones after, each once.
    private var masters: [String]
    private var leader: String?
    /// When the group was last asked who is in it (monotonic seconds).
    private var lastLearned = -Double.infinity
    /// Redirects followed in one call at most.
    static let maxHops = 3
    /// How often a master is asked who else is in its group.
    static let learnEvery = 30.0

    public init(_ masters: [String]) {
        var unique: [String] = []
        for master in masters where !unique.contains(master) { unique.append(master) }
        self.masters = unique
    }

    /// Adds a master heard of (a health check's or a ticket's).
    public func learn(_ url: String) {
        guard VolumeRegistry.normalize(url) == url else { return }
        lock.withLock { if !masters.contains(url) { masters.append(url) } }
    }

    /// The leader if known, else the first master.
    public var preferred: String? { lock.withLock { leader ?? masters.first } }

    public var known: [String] { lock.withLock { masters } }

    /// Retrying pays only when there is another master to reach.
    public var isGroup: Bool { lock.withLock { masters.count > 1 } }

    /// Sends `method pathAndQuery` to the leader (see the type). Returns the first answer
    /// that is not a redirect to the leader or a `503`, or the last one when patience ran
    /// out; throws when no master could be reached at all.
    public func send(_ client: HTTPClient, _ method: String, _ pathAndQuery: String, headers: HTTPHeaders = HTTPHeaders(),
                     body: [UInt8] = [], patience: Double) throws -> ClientResponse {
        let deadline = monotonicSeconds() + patience
        var lastAnswer: ClientResponse?
        var lastError: Error?
        while true {
            let (leader, masters) = lock.withLock { (self.leader, self.masters) }
            for master in (leader.map { [$0] } ?? []) + masters.filter({ $0 != leader }) {
                do {
                    let (answer, answeredBy) = try sendFollowing(client, method, master, pathAndQuery, headers, body)
                    if answer.status == 503 {
                        lastAnswer = answer
                        continue
                    }
                    lock.withLock { self.leader = answeredBy }
                    learnGroup(from: answeredBy, client, headers)
                    return answer
                } catch {
                    lastError = error
                    lock.withLock { if self.leader == master { self.leader = nil } }
                }
            }
            if monotonicSeconds() + 0.25 >= deadline {
                if let lastAnswer { return lastAnswer }
                throw lastError ?? HTTPError(503, "no master known")
            }
            usleep(250_000)
        }
    }

    /// Learns the masters of `master`'s group (`GET /admin/masters`, with the caller's
    /// credentials), at most every `learnEvery` seconds; quietly nothing when it will not say.
    private func learnGroup(from master: String, _ client: HTTPClient, _ headers: HTTPHeaders) {
        let now = monotonicSeconds()
        let due = lock.withLock { () -> Bool in
            guard now - lastLearned >= Self.learnEvery else { return false }
            lastLearned = now
            return true
        }
        guard due, let url = HTTPURL(master + "/admin/masters") else { return }
        var ask = HTTPHeaders()
        if let authorization = headers["Authorization"] { ask.add("Authorization", authorization) }
        guard let answer = try? client.send("GET", url, headers: ask), answer.status == 200,
              let group = try? JSONDecoder().decode(ClusterStatus.Group.self, from: Data(answer.body)) else { return }
        for member in group.masters { learn(member.url) }
    }

    /// One master's answer, following its `307`s to the leader; returns who answered.
    private func sendFollowing(_ client: HTTPClient, _ method: String, _ master: String, _ pathAndQuery: String,
                               _ headers: HTTPHeaders, _ body: [UInt8]) throws -> (ClientResponse, String) {
        guard var url = HTTPURL(master + pathAndQuery) else { throw HTTPError(500, "bad master URL \(master)") }
        var answeredBy = master
        for _ in 0...Self.maxHops {
            let answer = try client.send(method, url, headers: headers, body: body)
            // A standby's redirect names the same target on the leader; any other (a PUT's
            // to a volume) is the answer.
            // Never from https to http: a signed request would then go out in the clear.
            guard answer.status == 307, let location = answer.headers["Location"], let next = HTTPURL(location),
                  next.pathAndQuery == pathAndQuery, next.isSecure || !url.isSecure,
                  let origin = VolumeRegistry.normalize(next.origin) else {
                return (answer, answeredBy)
            }
            learn(origin)
            url = next
            answeredBy = origin
        }
        throw HTTPError(508, "the masters redirect in a loop")
    }
}
