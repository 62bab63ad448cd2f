import Foundation
import KalavaraSupport

/// Everything the status page and `kalavara status` show, in one snapshot taken by the
/// master: `GET /admin/status` serves it as JSON, `GET /` as HTML. Codable both ways, so
/// the CLI reads exactly what the master wrote.
public struct ClusterStatus: Codable, Sendable, Equatable {
    public struct Volume: Codable, Sendable, Equatable {
        public var url: String
        public var state: String
        /// Absent from an older master's answer.
        public var zone: String?
        public var freeBytes: Int?
        var totalBytes: Int?
        public var keys: Int?
        /// Requests per second the volume answered between its last two health checks.
        var requestRate: Double?
        var unknownFiles: Int?

        /// Used share of its disk, 0...1, when known.
        public var usedFraction: Double? {
            guard let freeBytes, let totalBytes, totalBytes > 0 else { return nil }
            return min(1, max(0, Double(totalBytes - freeBytes) / Double(totalBytes)))
        }

        enum CodingKeys: String, CodingKey {
            case url, state, keys, zone
            case freeBytes = "free_bytes", totalBytes = "total_bytes", requestRate = "request_rate", unknownFiles = "unknown_files"
        }
    }

    public struct Repair: Codable, Sendable, Equatable {
        public var running: Bool
        public var scanned: Int
        public var underReplicated: Int
        public var misplaced: Int
        public var copied: Int
        var bytesCopied: Int
        public var errors: Int
        public var passes: Int

        enum CodingKeys: String, CodingKey {
            case running, scanned, misplaced, copied, errors, passes
            case underReplicated = "under_replicated", bytesCopied = "bytes_copied"
        }
    }

    public struct Rebuild: Codable, Sendable, Equatable {
        public var running: Bool
        public var volumesDone: Int
        public var volumesTotal: Int
        public var keysFound: Int

        enum CodingKeys: String, CodingKey {
            case running
            case volumesDone = "volumes_done", volumesTotal = "volumes_total", keysFound = "keys_found"
        }
    }

    public struct Event: Codable, Sendable, Equatable {
        var time: Double
        public var level: String
        public var message: String
    }

    /// The master group (`GET /admin/masters`): one master leading, without `--etcd`.
    public struct Group: Codable, Sendable, Equatable {
        public struct Member: Codable, Sendable, Equatable {
            public var url: String
            public var role: String
            public var inSync: Bool
            public var lagMs: Int

            enum CodingKeys: String, CodingKey {
                case url, role
                case inSync = "in_sync", lagMs = "lag_ms"
            }
        }
        public var group: String
        public var leader: String?
        public var epoch: UInt64
        public var masters: [Member]
    }

    public var version: String
    public var master: String
    public var replicas: Int
    public var signed: Bool
    public var indexKeys: Int
    public var indexDiskFreeBytes: Int
    public var volumes: [Volume]
    public var repair: Repair
    public var rebuild: Rebuild
    public var recentEvents: [Event]
    var time: Double
    /// Absent from an older master's answer.
    public var group: Group?

    enum CodingKeys: String, CodingKey {
        case version, master, replicas, signed, volumes, repair, rebuild, time, group
        case indexKeys = "index_keys", indexDiskFreeBytes = "index_disk_free_bytes", recentEvents = "recent_events"
    }

    /// How many zones the volumes in service (not draining) span.
    public var zoneCount: Int { Set(volumes.filter { $0.state != "draining" }.map { $0.zone ?? Placement.defaultZone }).count }

    /// Whether healing has visible work: a pass or a rebuild running, or a volume draining.
    var isHealing: Bool {
        repair.running || rebuild.running || volumes.contains { $0.state == "draining" }
    }
}

extension Master {
    /// The snapshot the status page and the CLI show.
    func clusterStatus() -> ClusterStatus {
        let now = monotonicSeconds()
        let repair = reconciler.snapshot, rebuild = rebuilder.snapshot
        return ClusterStatus(
            version: Kalavara.version, master: configuration.advertisedURL, replicas: configuration.replicas,
            signed: gate.secret != nil, indexKeys: index.estimatedKeyCount,
            indexDiskFreeBytes: FileStore.freeBytes(at: configuration.databasePath),
            volumes: registry.present.map { volume in
                ClusterStatus.Volume(url: volume.url, state: volume.state(now: now, outAfter: registry.outAfter).rawValue,
                                     zone: volume.zone, freeBytes: volume.freeBytes, totalBytes: volume.totalBytes, keys: volume.valueCount,
                                     requestRate: volume.requestRate, unknownFiles: volume.unknownFiles)
            },
            repair: ClusterStatus.Repair(running: repair.running, scanned: repair.scanned, underReplicated: repair.underReplicated,
                                         misplaced: repair.misplaced, copied: repair.copied, bytesCopied: repair.bytesCopied,
                                         errors: repair.errors, passes: repair.passes),
            rebuild: ClusterStatus.Rebuild(running: rebuild.running, volumesDone: rebuild.volumesDone,
                                           volumesTotal: rebuild.volumesTotal, keysFound: rebuild.keysFound),
            recentEvents: RecentEvents.snapshot.map { ClusterStatus.Event(time: $0.time, level: $0.level, message: $0.message) },
            time: Date().timeIntervalSince1970, group: try? mastersView())
    }
}
