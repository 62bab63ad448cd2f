import Foundation

extension RocksDB {
    /// Left in the directory while `replaceContents` runs.
    static let replacingMarker = "REPLACING"

    /// A standby's database becomes a copy of the leader's: the checkpoint's files in
    /// `incoming` (a folder inside this database's directory, synced) replace this
    /// database's, which is then opened again. A crash in the middle leaves the marker
    /// `REPLACING` behind, and the next open starts from an empty database (see `init`): a
    /// standby that was taking a copy takes it again.
    public func replaceContents(with incoming: String) throws {
        let directory = (incoming as NSString).deletingLastPathComponent
        let marker = directory + "/" + Self.replacingMarker
        try whileClosed {
            guard FileManager.default.createFile(atPath: marker, contents: nil) else {
                throw Failure(description: "cannot create \(marker)")
            }
            try FileStore.syncDirectory(directory)
            try Self.removeContents(of: directory, keeping: [Self.replacingMarker, (incoming as NSString).lastPathComponent, "replication"])
            for name in try FileManager.default.contentsOfDirectory(atPath: incoming) {
                guard rename(incoming + "/" + name, directory + "/" + name) == 0 else {
                    throw Failure(description: "cannot move \(name) into the index: \(String(cString: strerror(errno)))")
                }
            }
            try FileStore.syncDirectory(directory)
            try? FileManager.default.removeItem(atPath: incoming)
        }
        unlink(marker)
        try FileStore.syncDirectory(directory)
    }

    /// Deletes everything in `directory` but the names in `keeping` (RocksDB's files and
    /// its `archive/` of old logs).
    static func removeContents(of directory: String, keeping: Set<String>) throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) where !keeping.contains(name) {
            try FileManager.default.removeItem(atPath: directory + "/" + name)
        }
    }
}
