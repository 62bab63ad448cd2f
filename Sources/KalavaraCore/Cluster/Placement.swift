/// Rendezvous (highest-random-weight) hashing: which volumes a key belongs on.
///
/// Each volume gets a score from the hash of (volume URL, key); the key's volumes are the
/// highest scores. Adding or losing a volume moves only the keys that volume wins or held,
/// and every master computes the same order with no shared table. Scores use the URL, not
/// a local id, so the order does not depend on the order volumes were registered in.
public enum Placement {
    /// `volumes` ordered from most to least preferred for `key`.
    public static func order(_ volumes: [String], for key: Key) -> [String] {
        let keyHash = StableHash.hash(key.bytes)
        return volumes
            .map { (url: $0, score: score(keyHash: keyHash, volume: $0)) }
            .sorted { $0.score != $1.score ? $0.score > $1.score : $0.url < $1.url }
            .map(\.url)
    }

    static func score(keyHash: UInt64, volume: String) -> UInt64 {
        score(keyHash: keyHash, volumeHash: StableHash.hash(volume.utf8))
    }

    /// The same score, for a volume whose URL hash is already known.
    @inline(__always) static func score(keyHash: UInt64, volumeHash: UInt64) -> UInt64 {
        StableHash.mix(keyHash ^ volumeHash)
    }
}
