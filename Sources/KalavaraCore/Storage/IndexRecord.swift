import KalavaraSupport
/// What the master knows about one key: its current version and where that version lives.
///
/// A tombstone is a record too: it keeps the version of the delete, so a write that was
/// issued before the delete and commits after it is recognised as older and refused, and it
/// lists the holders that have yet to drop their copies.
public struct IndexRecord: Equatable, Sendable {
    var version: UInt64
    var isTombstone: Bool
    /// Bytes of the value (0 for a tombstone).
    var size: UInt64
    /// The volumes holding this version, as registry ids. For a tombstone: those that still
    /// hold an older copy to remove.
    var holders: [UInt16]
    /// No commit of a version at or below this is accepted: versions a volume has been
    /// told are orphans, whose late commits must fail (see `Master.resolve`).
    var floor: UInt64
    /// A tombstone made only to fence a version of a key the index did not know (an
    /// orphan check): it says nothing about the key's older values, so the scrub's
    /// backstop treats the key as unknown.
    var isFence: Bool
    /// The value's CRC-32 as its volume computed it, when the commit said (format 2 value
    /// files): a repeated commit of a version is accepted only for the same content.
    var checksum: UInt32?
    /// The value's MD5, when the writer asked its volume for one (`Kalavara-Digest: md5`):
    /// the S3 gateway's ETag.
    var md5: [UInt8]?
    /// The writer's attributes of the value (`Kalavara-Attributes`: the S3 gateway keeps
    /// Content-Type and `x-amz-meta-*` here), opaque to the master, at most
    /// `maxAttributeBytes`.
    var attributes: [UInt8]?
    public static let maxAttributeBytes = 4096
    /// An encoded record's size past its key and attributes, at most (a few holders, an MD5).
    static let overheadBytes = 96

    public init(version: UInt64, isTombstone: Bool = false, size: UInt64, holders: [UInt16], floor: UInt64 = 0,
                isFence: Bool = false, checksum: UInt32? = nil, md5: [UInt8]? = nil, attributes: [UInt8]? = nil) {
        self.checksum = checksum
        self.md5 = md5
        self.attributes = attributes
        self.version = version
        self.isTombstone = isTombstone
        self.size = size
        self.holders = holders
        self.floor = floor
        self.isFence = isFence
    }

    /// Whether a commit of `candidate` would be older than what this record already rules out.
    func rulesOut(_ candidate: UInt64) -> Bool { candidate < version || candidate <= floor }

    private static let format: UInt8 = 1

    /// format · flags (bit 0 tombstone, bit 1 has floor, bit 2 fence, bit 3 has checksum,
    /// bit 4 has MD5, bit 5 has attributes) · version (8, LE) · size (8, LE) · [floor (8, LE)] ·
    /// [checksum (4, LE)] · [MD5 (16)] · [attribute length (2, LE) · attributes] · holder count ·
    /// holder ids (2 each). Ids rather than URLs keep a record about 25 bytes for a single replica.
    func encoded() -> [UInt8] {
        var bytes: [UInt8] = [Self.format, (isTombstone ? 1 : 0) | (floor > 0 ? 2 : 0) | (isFence ? 4 : 0)
                                | (checksum != nil ? 8 : 0) | (md5 != nil ? 16 : 0) | (attributes != nil ? 32 : 0)]
        bytes.reserveCapacity(31 + 2 * holders.count + (md5 == nil ? 0 : 16) + (attributes.map { $0.count + 2 } ?? 0))
        bytes.append(littleEndian: version)
        bytes.append(littleEndian: size)
        if floor > 0 { bytes.append(littleEndian: floor) }
        if let checksum { bytes.append(littleEndian: checksum) }
        if let md5 { bytes += md5 }
        if let attributes {
            bytes.append(littleEndian: UInt16(attributes.count))
            bytes += attributes
        }
        bytes.append(UInt8(holders.count))
        for holder in holders { bytes.append(littleEndian: holder) }
        return bytes
    }

    init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 19, bytes[0] == Self.format else { return nil }
        let flags = bytes[1]
        var at = 18
        if flags & 2 == 2 {
            guard bytes.count >= at + 8 else { return nil }
            floor = bytes.readLittleEndian(UInt64.self, at: at)
            at += 8
        } else {
            floor = 0
        }
        if flags & 8 == 8 {
            guard bytes.count >= at + 4 else { return nil }
            checksum = bytes.readLittleEndian(UInt32.self, at: at)
            at += 4
        } else {
            checksum = nil
        }
        if flags & 16 == 16 {
            guard bytes.count >= at + 16 else { return nil }
            md5 = Array(bytes[at..<at + 16])
            at += 16
        } else {
            md5 = nil
        }
        if flags & 32 == 32 {
            guard bytes.count >= at + 2 else { return nil }
            let length = Int(bytes.readLittleEndian(UInt16.self, at: at))
            at += 2
            guard bytes.count >= at + length else { return nil }
            attributes = Array(bytes[at..<at + length])
            at += length
        } else {
            attributes = nil
        }
        guard bytes.count > at else { return nil }
        let count = Int(bytes[at])
        guard bytes.count == at + 1 + 2 * count else { return nil }
        isTombstone = flags & 1 == 1
        isFence = flags & 4 == 4
        version = bytes.readLittleEndian(UInt64.self, at: 2)
        size = bytes.readLittleEndian(UInt64.self, at: 10)
        holders = (0..<count).map { bytes.readLittleEndian(UInt16.self, at: at + 1 + 2 * $0) }
    }
}
