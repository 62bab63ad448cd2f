import Foundation
import KalavaraHTTP
import KalavaraSupport

/// The master's routes for its group, and what a standby does with the others.
extension Master {
    /// What a route needs of this master's place in its group.
    enum Standing {
        /// Any master answers (health, metrics, status, the group's own view).
        case any
        /// A copy that holds every acknowledged write: the leader, or a standby in sync.
        case current
        /// Only the leader: it changes the index, or runs healing.
        case leader
    }

    /// `route`, sent to the leader when this master is not what it needs.
    func inGroup(_ standing: Standing, _ route: GuardedRoute) -> GuardedRoute {
        guard let group, standing != .any else { return route }
        let handler = route.route.handler
        return GuardedRoute(route.route.name, route.route.path, methods: route.route.methods, on: route.route.execution,
                            access: route.access) { request, body in
            let ready = standing == .leader ? group.isLeader : group.servesReads
            return ready ? try handler(request, body) : group.sendToLeader(request)
        }
    }

    /// The group's own routes: its view for operators, the log and checkpoints for standbys.
    var groupRoutes: [GuardedRoute] {
        [
            GuardedRoute("masters", .exact("/admin/masters"), methods: ["GET", "HEAD"], access: .client(.admin)) { [unowned self] _, _ in
                try .json(200, mastersView())
            },
            GuardedRoute("group-log", .exact("/internal/group/log"), methods: ["GET"], access: .cluster(streamed: false)) { [unowned self] request, _ in
                try shipLog(QueryParameters(request.query))
            },
            GuardedRoute("group-checkpoint", .exact("/internal/group/checkpoint"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] _, _ in
                guard let group, group.isLeader, let checkpoints else { return .text(503, "not the group's leader") }
                return try .json(200, try checkpoints.take())
            },
            GuardedRoute("group-checkpoint-file", .prefix("/internal/group/checkpoint/"), methods: ["GET"], access: .cluster(streamed: false)) { [unowned self] request, _ in
                guard let group, group.isLeader, let checkpoints else { return .text(503, "not the group's leader") }
                let parts = request.path.dropFirst("/internal/group/checkpoint/".count).split(separator: "/")
                guard parts.count == 2 else { return .text(400, "want /internal/group/checkpoint/ID/FILE") }
                return try checkpoints.file(id: String(parts[0]), name: String(parts[1]))
            },
        ]
    }

    /// `GET /admin/masters`: without a group, this master alone, leading.
    func mastersView() throws -> ClusterStatus.Group {
        if let group { return try group.mastersView() }
        return ClusterStatus.Group(group: "", leader: configuration.advertisedURL, epoch: 0,
                     masters: [.init(url: configuration.advertisedURL, role: "leader", inSync: true, lagMs: 0)])
    }

    /// A standby's poll of the log (see `LogShipping.poll`): `409` when its history is not a
    /// prefix of this one, `410` when the log no longer reaches back to it.
    private func shipLog(_ query: QueryParameters) throws -> HTTPResponse {
        guard let group, group.isLeader else { return .text(503, "not the group's leader") }
        guard let member = query["member"], VolumeRegistry.normalize(member) == member,
              let epoch = query["epoch"].flatMap(UInt64.init), let from = query["from"].flatMap(UInt64.init), from >= 1 else {
            return .text(400, "want member=URL&epoch=N&from=SEQUENCE (from 1)")
        }
        let history = try index.epochHistory()
        guard history.holdsPrefix(epoch: epoch, last: from - 1, latest: index.db.latestSequence) else {
            return .text(409, "the standby's index (epoch \(epoch), sequence \(from - 1)) is not a prefix of the leader's history")
        }
        let batches: [ReplicatedBatch], visibleThrough: UInt64
        do {
            (batches, visibleThrough) = try group.shipping.poll(member: member, from: from)
        } catch let gap as RocksDB.LogGap {
            return .text(410, "\(gap)")
        }
        var response = HTTPResponse(status: 200, body: .bytes(ReplicatedBatch.encode(batches)))
        response.headers.set("Content-Type", "application/octet-stream")
        response.headers.set("Kalavara-Epoch", String(history.current))
        response.headers.set(LogShipping.visibleThroughHeader, String(visibleThrough))
        return response
    }
}
