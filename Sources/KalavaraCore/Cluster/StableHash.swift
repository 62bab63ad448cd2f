/// Fast non-cryptographic 64-bit hashing with a fixed seed, stable across processes and
/// machines (Swift's `Hasher` is seeded per process, so it cannot decide placement).
enum StableHash {
    /// FNV-1a over the bytes, then a MurmurHash3 finaliser to spread the bits.
    static func hash<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
        var value: UInt64 = 0xcbf29ce484222325
        for byte in bytes { value = (value ^ UInt64(byte)) &* 0x100000001b3 }
        return mix(value)
    }

    /// MurmurHash3's fmix64: every input bit affects every output bit.
    @inline(__always) static func mix(_ input: UInt64) -> UInt64 {
        var x = input
        x ^= x >> 33
        x &*= 0xff51afd7ed558ccd
        x ^= x >> 33
        x &*= 0xc4ceb9fe1a85ec53
        x ^= x >> 33
        return x
    }
}
