import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// The volumes the master knows, their ids in index records, and the state of each.
///
/// The list is persisted in the index whenever it grows, so a restarted master still knows
/// volumes that were added at run time; so is each volume's mode (active, draining,
/// removed), and its zone, once its health answer has named one. Health is memory only:
/// after a restart every volume counts as up until its health checks say otherwise.
///
/// Zones are kept because placement depends on them: a restarted master, or a standby of
/// its group, places keys by the zones the volumes last reported, not by `default` until
/// each has answered a check again (which would move keys for nothing meanwhile).
///
/// Readers (every redirect, on the event loop) copy the table out of a mutex that is only
/// ever held for an in-memory change; adding a volume or changing its mode writes the
/// index outside it, under a lock of its own, so no reader ever waits for that synced write.
public final class VolumeRegistry: Sendable {
    /// What an operator made of a volume: in service, being emptied, or gone. Persisted.
    enum Mode: String, Sendable {
        case active, draining, removed
    }

    /// The state `GET /admin/volumes` shows (`removed` volumes are not shown).
    enum State: String, Sendable, Encodable {
        /// Answering health checks.
        case up
        /// Failing them for less than `outAfter`: its copies still count.
        case down
        /// Down longer than that: its copies no longer count and its keys are re-replicated.
        case out
        /// Being emptied: no new writes; its keys move to their new placement.
        case draining
        case removed
    }

    /// One volume as the master knows it: its id in index records, URL, health and mode.
    struct Volume: Sendable {
        let id: UInt16
        let url: String
        let address: HTTPURL
        fileprivate(set) var isLive = true
        fileprivate(set) var consecutiveFailures = 0
        /// When it last went down (monotonic seconds), while it is down.
        fileprivate(set) var downSince: Double?
        fileprivate(set) var mode = Mode.active
        /// Its failure domain (`volume --zone`), as its last health answer or the index said.
        fileprivate(set) var zone = Placement.defaultZone
        /// The zone the index holds for it (what a restarted master would start from).
        fileprivate var storedZone = Placement.defaultZone
        /// It has answered a health check since this master started: its zone is its own word.
        fileprivate(set) var hasAnswered = false
        /// Its zone changed and the index does not hold the new one yet.
        var isZoneUnstored: Bool { zone != storedZone }
        /// From the volume's last health answer.
        fileprivate(set) var freeBytes: Int?
        fileprivate(set) var valueCount: Int?
        fileprivate(set) var unknownFiles: Int?
        fileprivate(set) var totalBytes: Int?
        /// Its last health answer said its disk is full (read-and-delete mode).
        fileprivate(set) var isDiskFull = false
        /// Requests per second between its last two health answers.
        fileprivate(set) var requestRate: Double?
        fileprivate var lastRequests: (count: Int, at: Double)?

        /// Its state at monotonic time `now`, with volumes down longer than `outAfter` out.
        func state(now: Double, outAfter: Double) -> State {
            switch mode {
            case .removed: return .removed
            case .draining: return .draining
            case .active:
                guard !isLive else { return .up }
                return now - (downSince ?? now) >= outAfter ? .out : .down
            }
        }
    }

    /// Failed checks in a row before a volume counts as down: at one check a second, a
    /// killed volume is noticed within about three seconds, and one lost packet is forgiven.
    static let failuresBeforeDown = 3

    private let index: Index
    /// Seconds a volume may be down before its copies stop counting.
    let outAfter: Double
    /// The table; a volume's id is its position.
    private let volumes: Mutex<[Volume]>
    /// Held across index writes (additions, mode changes), so they happen one at a time.
    private let additions = Mutex(())

    init(index: Index, seeds: [String], outAfter: Double = 600) throws {
        self.index = index
        self.outAfter = outAfter
        var loaded: [Volume] = []
        let modes = try index.volumeModes(), zones = try index.volumeZones()
        for url in try index.volumeURLs() {
            guard let address = HTTPURL(url) else { continue }
            var volume = Volume(id: UInt16(loaded.count), url: url, address: address)
            volume.mode = modes[url].flatMap(Mode.init(rawValue:)) ?? .active
            volume.zone = zones[url] ?? Placement.defaultZone
            volume.storedZone = volume.zone
            loaded.append(volume)
        }
        volumes = Mutex(loaded)
        for seed in seeds { _ = try add(seed, explicit: false) }
    }

    /// Reads the table again from the index (a group's standby applied the leader's log):
    /// volumes added there are appended, modes and zones follow the index; health stays what
    /// this master's own checks say. Ids never change: the table only grows.
    public func reload() throws {
        try additions.withLock { _ in
            let urls = try index.volumeURLs()
            let modes = try index.volumeModes(), zones = try index.volumeZones()
            volumes.withLock { volumes in
                for url in urls.dropFirst(volumes.count) {
                    guard let address = HTTPURL(url) else { continue }
                    volumes.append(Volume(id: UInt16(volumes.count), url: url, address: address))
                }
                for position in volumes.indices {
                    volumes[position].mode = modes[volumes[position].url].flatMap(Mode.init(rawValue:)) ?? .active
                    volumes[position].storedZone = zones[volumes[position].url] ?? Placement.defaultZone
                    volumes[position].zone = volumes[position].storedZone
                }
            }
        }
    }

    /// The canonical form of a volume base URL (`http://host:port` or `https://host:port`),
    /// or nil if `text` is not one.
    public static func normalize(_ text: String) -> String? {
        var trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let url = HTTPURL(trimmed), url.pathAndQuery == "/" else { return nil }
        return url.origin
    }

    /// Adds a volume (idempotent) and marks it alive. Returns its id and whether it is new
    /// (or back in service). `explicit` is an operator's add: it brings a drained or
    /// removed volume back; a volume's own heartbeat does not.
    @discardableResult
    func add(_ text: String, explicit: Bool = true) throws -> (id: UInt16, isNew: Bool) {
        guard let url = Self.normalize(text), let address = HTTPURL(url) else {
            throw HTTPError(400, "not a volume base URL (want http://host:port or https://host:port): \(text.prefix(200))")
        }
        return try additions.withLock { _ in
            let known = volumes.withLock { volumes -> (UInt16, Mode)? in
                guard let existing = volumes.firstIndex(where: { $0.url == url }) else { return nil }
                if volumes[existing].mode != .removed {
                    volumes[existing].isLive = true
                    volumes[existing].consecutiveFailures = 0
                    volumes[existing].downSince = nil
                }
                return (volumes[existing].id, volumes[existing].mode)
            }
            if let (id, mode) = known {
                guard explicit, mode != .active else { return (id, false) }
                try setModeLocked(id, .active)
                return (id, true)
            }
            let current = volumes.withLock { $0 }
            guard current.count < Int(UInt16.max) else { throw HTTPError(507, "too many volumes") }
            try index.setVolumeURLs(current.map(\.url) + [url])
            let id = UInt16(current.count)
            volumes.withLock { $0.append(Volume(id: id, url: url, address: address)) }
            return (id, true)
        }
    }

    /// Changes a volume's mode, durably.
    func setMode(_ id: UInt16, _ mode: Mode) throws {
        try additions.withLock { _ in try setModeLocked(id, mode) }
    }

    private func setModeLocked(_ id: UInt16, _ mode: Mode) throws {
        let table = volumes.withLock { volumes -> [Volume] in
            if Int(id) < volumes.count { volumes[Int(id)].mode = mode } // health stays what the checks say
            return volumes
        }
        var modes: [String: String] = [:]
        for volume in table where volume.mode != .active { modes[volume.url] = volume.mode.rawValue }
        try index.setVolumeModes(modes)
    }

    /// Every volume, removed ones included (their ids stay taken).
    var all: [Volume] { volumes.withLock { $0 } }

    /// Volumes in service or draining: the ones to check and to show.
    var present: [Volume] { all.filter { $0.mode != .removed } }

    /// Where new writes go: live volumes that are not draining, split by whether their last
    /// health answer said the disk is full (read-and-delete mode). A PUT is placed on the
    /// ones with room, as a down volume's keys are; full ones make up the number only when
    /// too few others remain (their `507` then says why). Each with its zone, which the
    /// placement needs. One pass, one lock: every PUT asks.
    var writable: (roomy: [(url: String, zone: String)], full: [(url: String, zone: String)]) {
        volumes.withLock { volumes in
            var roomy: [(url: String, zone: String)] = [], full: [(url: String, zone: String)] = []
            for volume in volumes where volume.isLive && volume.mode == .active {
                if volume.isDiskFull { full.append((volume.url, volume.zone)) } else { roomy.append((volume.url, volume.zone)) }
            }
            return (roomy, full)
        }
    }

    var liveURLs: [String] { all.filter { $0.isLive && $0.mode != .removed }.map(\.url) }

    /// The URLs of the live volumes among `ids`, in that order (one lock, no copies of
    /// the whole table: this runs for every read). A live volume whose last health check
    /// failed (it may have hung: not down yet, but not answering) is left out while another
    /// one remains, so clients are sent away from it a check after it stops answering,
    /// not only once it is down. `excluding` (a holder that said it no longer has the key)
    /// is left out first, so a suspect holder is still tried when it was the only other.
    func liveURLs(among ids: [UInt16], excluding: String? = nil) -> [String] {
        volumes.withLock { volumes in
            var answering: [String] = [], suspect: [String] = []
            for id in ids where Int(id) < volumes.count {
                let volume = volumes[Int(id)]
                guard volume.isLive, volume.mode != .removed, volume.url != excluding else { continue }
                if volume.consecutiveFailures == 0 { answering.append(volume.url) } else { suspect.append(volume.url) }
            }
            return answering.isEmpty ? suspect : answering
        }
    }

    func id(of url: String) -> UInt16? {
        let normal = Self.normalize(url) ?? url
        return volumes.withLock { $0.first(where: { $0.url == normal })?.id }
    }

    func volume(_ id: UInt16) -> Volume? {
        volumes.withLock { Int(id) < $0.count ? $0[Int(id)] : nil }
    }

    /// Records a health check's outcome. Returns the liveness change, if any, for logging.
    func recordCheck(id: UInt16, succeeded: Bool, report: HealthReport = HealthReport()) -> Bool? {
        volumes.withLock { volumes in
            guard Int(id) < volumes.count else { return nil }
            let wasLive = volumes[Int(id)].isLive
            if succeeded {
                volumes[Int(id)].consecutiveFailures = 0
                volumes[Int(id)].isLive = true
                volumes[Int(id)].downSince = nil
                if let freeBytes = report.freeBytes { volumes[Int(id)].freeBytes = freeBytes }
                if let valueCount = report.valueCount { volumes[Int(id)].valueCount = valueCount }
                if let unknownFiles = report.unknownFiles { volumes[Int(id)].unknownFiles = unknownFiles }
                if let totalBytes = report.totalBytes { volumes[Int(id)].totalBytes = totalBytes }
                volumes[Int(id)].isDiskFull = report.isDiskFull
                volumes[Int(id)].zone = report.zone ?? Placement.defaultZone
                volumes[Int(id)].hasAnswered = true
                if let requests = report.requests {
                    let now = monotonicSeconds()
                    if let last = volumes[Int(id)].lastRequests, now > last.at, requests >= last.count {
                        volumes[Int(id)].requestRate = Double(requests - last.count) / (now - last.at)
                    }
                    volumes[Int(id)].lastRequests = (requests, now)
                }
            } else {
                volumes[Int(id)].consecutiveFailures += 1
                if volumes[Int(id)].consecutiveFailures >= Self.failuresBeforeDown, wasLive {
                    volumes[Int(id)].isLive = false
                    volumes[Int(id)].downSince = monotonicSeconds()
                }
            }
            let isLive = volumes[Int(id)].isLive
            return isLive == wasLive ? nil : isLive
        }
    }
}

extension VolumeRegistry {
    /// Writes the zones the volumes reported to the index where it holds others, so that
    /// a restarted master or a standby places keys as this one does. Returns the volumes
    /// whose zone it wrote. On a group's standby the write is refused (only the leader
    /// writes the index), and the leader's, once applied, is what `reload` reads.
    func storeZones() throws -> [Volume] {
        try additions.withLock { _ in
            let table = volumes.withLock { $0 }
            let changed = table.filter { $0.zone != $0.storedZone }
            guard !changed.isEmpty else { return [] }
            var zones: [String: String] = [:]
            for volume in table where volume.zone != Placement.defaultZone { zones[volume.url] = volume.zone }
            try index.setVolumeZones(zones)
            volumes.withLock { volumes in
                for volume in table { volumes[Int(volume.id)].storedZone = volume.zone }
            }
            return changed
        }
    }

    /// How many zones the volumes in service span.
    var zoneCount: Int { Set(all.filter { $0.mode == .active }.map(\.zone)).count }

    /// The same, once each has answered a health check or is down (before, a volume's zone
    /// may be the `default` of one not heard from yet).
    var settledZoneCount: Int? {
        all.allSatisfy { $0.mode != .active || $0.hasAnswered || !$0.isLive } ? zoneCount : nil
    }
}

/// What a volume's health answer says about it.
struct HealthReport: Sendable, Equatable {
    var freeBytes: Int?
    var totalBytes: Int?
    var valueCount: Int?
    var unknownFiles: Int?
    var requests: Int?
    /// The volume is in read-and-delete mode (see `SpaceReserve`).
    var isDiskFull = false
    /// The zone it names (`volume --zone`); nil when it names none or an invalid one.
    var zone: String?

    init(freeBytes: Int? = nil, totalBytes: Int? = nil, valueCount: Int? = nil, unknownFiles: Int? = nil,
                requests: Int? = nil) {
        self.freeBytes = freeBytes
        self.totalBytes = totalBytes
        self.valueCount = valueCount
        self.unknownFiles = unknownFiles
        self.requests = requests
    }

    init(_ headers: HTTPHeaders) {
        func number(_ name: String) -> Int? { headers[name].flatMap { Int($0) } }
        self.init(freeBytes: number(VolumeHeaders.freeBytes), totalBytes: number(VolumeHeaders.totalBytes),
                  valueCount: number(VolumeHeaders.valueCount), unknownFiles: number(VolumeHeaders.unknownFiles),
                  requests: number(VolumeHeaders.requests))
        isDiskFull = headers[VolumeHeaders.diskFull] != nil
        zone = headers[VolumeHeaders.zone].flatMap { Placement.isValidZone($0) ? $0 : nil }
    }
}
