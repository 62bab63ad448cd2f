/// Header names of the master–volume conversation.
public enum VolumeHeaders {
    /// Sent by the master on health checks: its own base URL.
    public static let master = "Kalavara-Master"
    /// Sent by the master on health checks: the URL it knows the volume by.
    public static let selfURL = "Kalavara-Volume"
    /// Answered by a volume's health check.
    public static let freeBytes = "Kalavara-Free-Bytes"
    public static let valueCount = "Kalavara-Values"
    /// Answered by a commit: the version of the value it replaced, so the volumes can drop
    /// exactly that file without listing a directory.
    public static let previousVersion = "Kalavara-Previous-Version"
    /// Answered by `/internal/resolve`: `committed` or `orphan`.
    public static let resolution = "Kalavara-Resolution"
}
