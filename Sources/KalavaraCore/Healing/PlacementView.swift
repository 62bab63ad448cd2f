import KalavaraSupport

/// The registry as the placement reconciler sees it at one moment: which volumes count for
/// placement (`up` or `down`), which are live (can send or receive a copy), and each key's
/// placement among them.
///
/// A key's placement is the first `replicas` volumes of its zone-aware rendezvous order
/// (`Placement.ranked`: the best volume of each of the best zones) among the volumes that
/// count. The same ranking decides where a PUT goes (`Placement.placement`), so a key
/// written while every volume is up is in place from the start. Copies that share a zone
/// while another zone could take one are therefore misplaced, and move.
struct PlacementView {
    struct Candidate {
        let id: UInt16
        let url: String
        let urlHash: UInt64
        let zone: String
    }

    let replicas: Int
    /// Volumes that count (`up`, `down`), with their URL hashes precomputed: a pass orders
    /// every key of the index, so this is its inner loop.
    let counting: [Candidate]
    let countingIDs: Set<UInt16>
    /// Volumes answering health checks and not removed: sources and targets of copies.
    let live: Set<UInt16>
    /// Live volumes whose disk is full (read-and-delete mode): sources of copies, never
    /// targets. A copy to one would fail; a key placed on one waits where a PUT put it
    /// (see `MasterRoutes.redirectWrite`) until the volume has room and a pass moves it.
    let full: Set<UInt16>
    let states: [UInt16: VolumeRegistry.State]
    /// Every volume's zone, by id.
    let zones: [UInt16: String]

    init(registry: VolumeRegistry, replicas: Int, now: Double = monotonicSeconds()) {
        self.replicas = replicas
        var counting: [Candidate] = []
        var live: Set<UInt16> = [], full: Set<UInt16> = []
        var states: [UInt16: VolumeRegistry.State] = [:], zones: [UInt16: String] = [:]
        for volume in registry.all {
            let state = volume.state(now: now, outAfter: registry.outAfter)
            states[volume.id] = state
            zones[volume.id] = volume.zone
            if state == .up || state == .down {
                counting.append(Candidate(id: volume.id, url: volume.url, urlHash: StableHash.hash(volume.url.utf8), zone: volume.zone))
            }
            if volume.isLive, volume.mode != .removed { live.insert(volume.id) }
            if volume.isLive, volume.isDiskFull { full.insert(volume.id) }
        }
        self.counting = counting
        countingIDs = Set(counting.map(\.id))
        self.live = live
        self.full = full
        self.states = states
        self.zones = zones
    }

    /// The counting volumes, most preferred first, for `key`: its rendezvous order, ranked
    /// zone by zone (`Placement.ranked`).
    func order(_ key: Key) -> [UInt16] {
        let keyHash = StableHash.hash(key.bytes)
        let ordered = counting
            .map { (candidate: $0, score: Placement.score(keyHash: keyHash, volumeHash: $0.urlHash)) }
            .sorted { $0.score != $1.score ? $0.score > $1.score : $0.candidate.url < $1.candidate.url }
            .map(\.candidate)
        return Placement.ranked(ordered, zone: \.zone).map(\.id)
    }

    func zone(_ id: UInt16) -> String { zones[id] ?? Placement.defaultZone }

    /// How many zones the volumes that count span.
    var zoneCount: Int { Set(counting.map(\.zone)).count }

    /// What a pass makes of a key's record, without asking any volume.
    enum Assessment: Equatable {
        case inPlace
        /// Fewer copies on volumes that count than `replicas`: fixed first.
        case short
        /// Enough copies, but not (only) on the placement.
        case misplaced
    }

    func assess(_ key: Key, _ record: IndexRecord) -> Assessment {
        let countingHolders = record.holders.reduce(0) { $0 + (countingIDs.contains($1) ? 1 : 0) }
        if countingHolders < min(replicas, counting.count) || countingHolders == 0 { return .short }
        let placement = order(key).prefix(replicas)
        if placement.count == record.holders.count, placement.allSatisfy(record.holders.contains) { return .inPlace }
        return .misplaced
    }

    /// What to do for a key: where to copy it, and the holders to keep once those copies
    /// exist (the rest go).
    struct Plan: Equatable {
        var targets: [UInt16]
        var keep: [UInt16]
        var drop: [UInt16]
    }

    /// Whether a copy may go to this volume: live, and with room on its disk.
    func accepts(_ id: UInt16) -> Bool { live.contains(id) && !full.contains(id) }

    /// Plans a key's repair. Copies go to placement volumes that lack it and accept copies;
    /// when the key is short and some of its placement is down or full, to the next such
    /// volumes in its order, in zones its copies are not in while there are such (substitutes,
    /// handed back later). Holders beyond the placement are dropped only once `replicas`
    /// copies on counting volumes remain; the ones kept are spread over as many zones as can be.
    func plan(_ key: Key, _ record: IndexRecord, copiable: (UInt16) -> Bool = { _ in true }) -> Plan {
        let order = order(key)
        let holders = record.holders
        var targets: [UInt16] = []
        var present = Set(holders.filter(countingIDs.contains))
        for id in order.prefix(replicas) where !holders.contains(id) && accepts(id) && copiable(id) {
            targets.append(id)
            present.insert(id)
        }
        let substitutes = Placement.pick(replicas - present.count, from: Array(order.dropFirst(replicas)),
                                         besides: order.filter(present.contains), zone: zone) {
            !holders.contains($0) && accepts($0) && copiable($0)
        }
        targets += substitutes
        present.formUnion(substitutes)
        // Keep `replicas` copies, placement order and distinct zones first, then, while still
        // short, copies on volumes that no longer count (live ones first): better an extra
        // copy on a draining or out volume than one copy too few.
        var keep = Placement.pick(replicas, from: order, zone: zone, where: present.contains)
        let others = holders.filter { !keep.contains($0) && !countingIDs.contains($0) }
        for id in others.filter(live.contains) + others.filter({ !live.contains($0) }) where keep.count < replicas {
            keep.append(id)
        }
        let drop = holders.filter { !keep.contains($0) }
        return Plan(targets: targets.filter(keep.contains), keep: keep, drop: drop)
    }
}
