/// What the master knows about one key: its current version and where that version lives.
///
/// A tombstone is a record too: it keeps the version of the delete, so a write that was
/// issued before the delete and commits after it is recognised as older and refused, and it
/// lists the holders that have yet to drop their copies.
public struct IndexRecord: Equatable, Sendable {
    public var version: UInt64
    public var isTombstone: Bool
    /// Bytes of the value (0 for a tombstone).
    public var size: UInt64
    /// The volumes holding this version, as registry ids. For a tombstone: those that still
    /// hold an older copy to remove.
    public var holders: [UInt16]
    /// No commit of a version at or below this is accepted: versions a volume has been
    /// told are orphans, whose late commits must fail (see `Master.resolve`).
    public var floor: UInt64
    /// A tombstone made only to fence a version of a key the index did not know (an
    /// orphan check): it says nothing about the key's older values, so the scrub's
    /// backstop treats the key as unknown.
    public var isFence: Bool
    /// The value's CRC-32 as its volume computed it, when the commit said (format 2 value
    /// files): a repeated commit of a version is accepted only for the same content.
    public var checksum: UInt32?

    public init(version: UInt64, isTombstone: Bool = false, size: UInt64, holders: [UInt16], floor: UInt64 = 0,
                isFence: Bool = false, checksum: UInt32? = nil) {
        self.checksum = checksum
        self.version = version
        self.isTombstone = isTombstone
        self.size = size
        self.holders = holders
        self.floor = floor
        self.isFence = isFence
    }

    /// Whether a commit of `candidate` would be older than what this record already rules out.
    public func rulesOut(_ candidate: UInt64) -> Bool { candidate < version || candidate <= floor }

    private static let format: UInt8 = 1

    /// format · flags (bit 0 tombstone, bit 1 has floor, bit 2 fence, bit 3 has checksum) ·
    /// version (8, LE) · size (8, LE) · [floor (8, LE)] · [checksum (4, LE)] · holder count ·
    /// holder ids (2 each). Ids rather than URLs keep a record about 25 bytes for a single replica.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [Self.format, (isTombstone ? 1 : 0) | (floor > 0 ? 2 : 0) | (isFence ? 4 : 0)
                                | (checksum != nil ? 8 : 0)]
        bytes.reserveCapacity(31 + 2 * holders.count)
        bytes.append(littleEndian: version)
        bytes.append(littleEndian: size)
        if floor > 0 { bytes.append(littleEndian: floor) }
        if let checksum { bytes.append(littleEndian: checksum) }
        bytes.append(UInt8(holders.count))
        for holder in holders { bytes.append(littleEndian: holder) }
        return bytes
    }

    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 19, bytes[0] == Self.format else { return nil }
        let hasFloor = bytes[1] & 2 == 2, hasChecksum = bytes[1] & 8 == 8
        let checksumAt = hasFloor ? 26 : 18
        let countAt = checksumAt + (hasChecksum ? 4 : 0)
        guard bytes.count > countAt else { return nil }
        let count = Int(bytes[countAt])
        guard bytes.count == countAt + 1 + 2 * count else { return nil }
        isTombstone = bytes[1] & 1 == 1
        isFence = bytes[1] & 4 == 4
        version = bytes.readLittleEndian(UInt64.self, at: 2)
        size = bytes.readLittleEndian(UInt64.self, at: 10)
        floor = hasFloor ? bytes.readLittleEndian(UInt64.self, at: 18) : 0
        checksum = hasChecksum ? bytes.readLittleEndian(UInt32.self, at: checksumAt) : nil
        holders = (0..<count).map { bytes.readLittleEndian(UInt16.self, at: countAt + 1 + 2 * $0) }
    }
}
