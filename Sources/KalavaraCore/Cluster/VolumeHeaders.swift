import KalavaraSupport
/// Header names of the master–volume conversation.
public enum VolumeHeaders {
    /// Sent by the master on health checks: its own base URL.
    public static let master = "Kalavara-Master"
    /// Sent by the master on health checks: the URL it knows the volume by.
    static let selfURL = "Kalavara-Volume"
    /// Answered by a volume's health check.
    static let freeBytes = "Kalavara-Free-Bytes"
    static let valueCount = "Kalavara-Values"
    static let totalBytes = "Kalavara-Total-Bytes"
    /// Requests the volume has answered since it started.
    static let requests = "Kalavara-Requests"
    /// Answered by a volume's health check once a scrub pass has asked the master: value
    /// files of keys the master's index does not know.
    static let unknownFiles = "Kalavara-Unknown-Files"
    /// Answered by a volume's health check while its disk is full (`read-and-delete`): it
    /// serves reads and deletes and refuses new values with `507`.
    static let diskFull = "Kalavara-Disk-Full"
    /// Answered by a volume's health check: its zone (`volume --zone`), the failure domain
    /// the master's placement keeps a key's copies apart by.
    static let zone = "Kalavara-Zone"
    /// Sent with a volume's own registration (heartbeat), which must not bring back a
    /// volume an operator drained or removed.
    public static let heartbeat = "Kalavara-Heartbeat"
    /// Sent with a copy between volumes: the CRC-32 (hex) the value must have.
    static let checksum = "Kalavara-Checksum"
    /// Answered by a commit: the version of the value it replaced, so the volumes can drop
    /// exactly that file without listing a directory.
    static let previousVersion = "Kalavara-Previous-Version"
    /// Answered by `/internal/resolve`: `committed` or `orphan`.
    static let resolution = "Kalavara-Resolution"
    /// Answered by a commit, and passed on by a volume that answers its client with the
    /// master's refusal: what the master decided (see `CommitOutcome`), e.g.
    /// `superseded; op=put; version=N`.
    static let outcome = "Kalavara-Outcome"
    /// On a PUT to a volume: attributes of the value to keep in the master's index with it
    /// (printable ASCII, at most `IndexRecord.maxAttributeBytes`); the master answers them on
    /// every 302 and HEAD of the key, and in a listing with `detail=1`.
    public static let attributes = "Kalavara-Attributes"
    /// On a PUT to a volume, `md5`: compute the value's MD5 while it streams in, keep it in
    /// the index, and answer it in `Kalavara-MD5` (hex).
    public static let digest = "Kalavara-Digest"
    public static let md5 = "Kalavara-MD5"
    /// On the master's 302/HEAD of a value with attributes or an MD5: its size in bytes.
    public static let size = "Kalavara-Size"
}
