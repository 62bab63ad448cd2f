import KalavaraHTTP
// StoredValue: one version of a value, open for reading.

/// One version of a value, open for reading; the value starts after its header.
public struct StoredValue: Sendable {
    let file: OpenFile
    let key: Key
    let version: UInt64
    let valueOffset: Int
    let size: Int
    /// Seconds since the epoch.
    let modified: Int
    /// CRC-32 of the value from the header; nil for a format 1 (unverified) file.
    let checksum: UInt32?
    /// The size the header says; a file of another size was cut or grown.
    let declaredSize: Int?
    /// The value's bytes, unchecked, when the open read them with the header (a small value
    /// opened for a GET); `readVerified` checks them instead of reading the file again.
    let contents: [UInt8]?

    /// False for a file cut or grown since it was written: its length is not the size its
    /// header records (format 1 files record none). Checked on every read, copy and listing:
    /// it costs nothing (the length comes from the open's fstat) and sendfile never reads
    /// the bytes it sends.
    var isWhole: Bool { declaredSize.map { $0 == size } ?? true }
}
