/// Rendezvous (highest-random-weight) hashing: which volumes a key belongs on.
///
/// Each volume gets a score from the hash of (volume URL, key); the key's volumes are the
/// highest scores. Adding or losing a volume moves only the keys that volume wins or held,
/// and every master computes the same order with no shared table. Scores use the URL, not
/// a local id, so the order does not depend on the order volumes were registered in.
///
/// Volumes belong to zones (`volume --zone`: whatever fails together), and a key's copies
/// go to distinct zones: `ranked` turns the rendezvous order into one that takes the best
/// volume of each zone first. With six volumes on three hosts, two per host, and two copies,
/// the plain order puts one key in five with both copies on one host; the ranked one, none.
public enum Placement {
    /// The zone of a volume that has not said which (`volume --zone` unset or not reported yet).
    public static let defaultZone = "default"

    /// Whether `name` may name a zone: 1 to 64 letters, digits, `.`, `_`, `-` or `:`
    /// (it travels in a header and is kept in `URL ZONE` lines of the index).
    public static func isValidZone(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ":")
        }
    }

    /// `volumes` ordered from most to least preferred for `key`, zones aside.
    public static func order(_ volumes: [String], for key: Key) -> [String] {
        byScore(volumes, url: { $0 }, for: key)
    }

    /// The first `replicas` volumes for `key`: the best volume of each of the best zones
    /// (see `ranked`). A pure function of the key and the volumes with their zones.
    public static func placement(_ volumes: [(url: String, zone: String)], replicas: Int, for key: Key) -> [String] {
        ranked(byScore(volumes, url: \.url, for: key), zone: \.zone).prefix(replicas).map(\.url)
    }

    /// `volumes` by their rendezvous score for `key`, best first (ties by URL).
    private static func byScore<Volume>(_ volumes: [Volume], url: (Volume) -> String, for key: Key) -> [Volume] {
        let keyHash = StableHash.hash(key.bytes)
        return volumes
            .map { (volume: $0, url: url($0), score: score(keyHash: keyHash, volume: url($0))) }
            .sorted { $0.score != $1.score ? $0.score > $1.score : $0.url < $1.url }
            .map(\.volume)
    }

    /// A rendezvous order made zone-aware, in rounds: first the best volume of each zone,
    /// zones ranked by that volume; then the second-best of each zone, in the order of those;
    /// and so on. Its first N are the first volume of each of the first N zones, and with
    /// fewer zones than N every zone holds a copy before any holds two.
    ///
    /// Movement stays minimal: a volume added changes a key's first N only where it becomes
    /// its zone's best of a round that reaches into them, which is where it takes a copy.
    /// With one zone, the rounds are the rendezvous order itself.
    static func ranked<Volume>(_ ordered: [Volume], zone: (Volume) -> String) -> [Volume] {
        var rounds: [[Volume]] = []
        var seen: [String: Int] = [:]
        for volume in ordered {
            let round = seen[zone(volume), default: 0]
            seen[zone(volume)] = round + 1
            if round == rounds.count { rounds.append([]) }
            rounds[round].append(volume)
        }
        return rounds.flatMap { $0 }
    }

    /// Up to `count` volumes from `ranked` that `eligible` accepts, in a zone none of `taken`
    /// (nor one picked before) is in while such a volume remains, then in ranked order:
    /// substitutes, and the copies kept, spread over as many zones as there are.
    static func pick<Volume: Equatable>(_ count: Int, from ranked: [Volume], besides taken: [Volume] = [],
                                        zone: (Volume) -> String, where eligible: (Volume) -> Bool) -> [Volume] {
        var picked: [Volume] = []
        var zones = Set(taken.map(zone))
        let candidates = ranked.filter { !taken.contains($0) && eligible($0) }
        for volume in candidates where picked.count < count && !zones.contains(zone(volume)) {
            picked.append(volume)
            zones.insert(zone(volume))
        }
        for volume in candidates where picked.count < count && !picked.contains(volume) { picked.append(volume) }
        return picked
    }

    static func score(keyHash: UInt64, volume: String) -> UInt64 {
        score(keyHash: keyHash, volumeHash: StableHash.hash(volume.utf8))
    }

    /// The same score, for a volume whose URL hash is already known.
    @inline(__always) static func score(keyHash: UInt64, volumeHash: UInt64) -> UInt64 {
        StableHash.mix(keyHash ^ volumeHash)
    }
}
