import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// What a leader tells a standby about the copy of its index it may take.
struct CheckpointManifest: Codable, Sendable {
    struct File: Codable, Sendable {
        var name: String
        var size: Int
    }
    var id: String
    var sequence: UInt64
    var files: [File]

    /// A file name the standby may write into its index directory: RocksDB's own names,
    /// never a path.
    static func isSafe(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128 && name != "." && name != ".."
            && name.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == ASCII.dot || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }
}

/// The leader's checkpoints (`rocksdb_checkpoint_create`: hard links of its files, in a
/// folder inside the index directory, on the same filesystem). One at a time: a standby
/// that asks while a recent one exists gets it; older ones are deleted.
final class CheckpointShelf: @unchecked Sendable {
    private let index: Index
    private let folder: String
    private let current = Mutex<(manifest: CheckpointManifest, made: Double)?>(nil)
    /// A checkpoint this young is handed out again rather than made anew.
    static let reuseFor = 60.0

    init(index: Index) {
        self.index = index
        folder = index.path + "/replication"
        try? FileManager.default.removeItem(atPath: folder) // a previous process's
    }

    /// A checkpoint a standby may copy, made now unless a recent one exists.
    func take() throws -> CheckpointManifest {
        try current.withLock { current in
            let now = monotonicSeconds()
            if let current, now - current.made < Self.reuseFor { return current.manifest }
            try? FileManager.default.removeItem(atPath: folder)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let id = String(UInt64(Date().timeIntervalSince1970 * 1000))
            let directory = folder + "/" + id
            let sequence = try index.db.checkpoint(into: directory)
            var files: [CheckpointManifest.File] = []
            for name in try FileManager.default.contentsOfDirectory(atPath: directory).sorted() {
                let size = (try FileManager.default.attributesOfItem(atPath: directory + "/" + name)[.size] as? Int) ?? 0
                files.append(.init(name: name, size: size))
            }
            let manifest = CheckpointManifest(id: id, sequence: sequence, files: files)
            current = (manifest, now)
            return manifest
        }
    }

    /// One file of the current checkpoint, sent with sendfile.
    func file(id: String, name: String) throws -> HTTPResponse {
        guard let manifest = current.withLock({ $0?.manifest }), manifest.id == id,
              let entry = manifest.files.first(where: { $0.name == name }) else {
            return .text(404, "no such checkpoint file (checkpoints are replaced after \(Int(Self.reuseFor)) s)")
        }
        let fd = open(folder + "/" + id + "/" + entry.name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .text(404, "checkpoint file gone: \(String(cString: strerror(errno)))") }
        return HTTPResponse(status: 200, body: .file(OpenFile(fd: fd), offset: 0, count: entry.size))
    }
}

/// A standby's copy of the leader's index: the files are fetched into `incoming/` inside its
/// own index directory, synced, and then take the place of its index (see
/// `RocksDB.replaceContents`).
struct CheckpointTransfer {
    let client: HTTPClient
    let index: Index

    /// Copies the leader's checkpoint; `install` runs the swap (the follower's guard against
    /// a campaign meanwhile).
    func copy(from leader: String, member: String, install: (() throws -> Void) throws -> Void) throws {
        guard let manifestURL = HTTPURL(leader + "/internal/group/checkpoint?member=" + PercentEncoding.encode(member)) else {
            throw HTTPError(500, "bad leader URL \(leader)")
        }
        let answer = try client.send("POST", manifestURL)
        guard answer.status == 200 else { throw HTTPError(502, "the leader refused a checkpoint: \(answer.status) \(answer.text)") }
        let manifest = try JSONDecoder().decode(CheckpointManifest.self, from: Data(answer.body))
        guard manifest.files.allSatisfy({ CheckpointManifest.isSafe($0.name) && $0.size >= 0 }), CheckpointManifest.isSafe(manifest.id) else {
            throw HTTPError(502, "the leader's checkpoint manifest names a file this standby will not write")
        }
        Log.info("copying the leader's index", ["leader": "\(leader)", "files": "\(manifest.files.count)",
                                                "bytes": "\(manifest.files.reduce(0) { $0 + $1.size })"])
        let incoming = index.path + "/incoming"
        try? FileManager.default.removeItem(atPath: incoming)
        try FileManager.default.createDirectory(atPath: incoming, withIntermediateDirectories: true)
        for file in manifest.files {
            try fetch(file, of: manifest, from: leader, into: incoming + "/" + file.name)
        }
        try FileStore.syncDirectory(incoming)
        try install { try index.db.replaceContents(with: incoming) }
        Log.info("this standby now holds the leader's index up to sequence \(manifest.sequence)")
    }

    private func fetch(_ file: CheckpointManifest.File, of manifest: CheckpointManifest, from leader: String, into path: String) throws {
        guard let url = HTTPURL(leader + "/internal/group/checkpoint/" + manifest.id + "/" + file.name) else {
            throw HTTPError(500, "bad checkpoint URL")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HTTPError(500, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var written = 0
        let answer = try client.download("GET", url, sink: { piece in
            guard written + piece.count <= file.size else { throw HTTPError(502, "checkpoint file \(file.name) longer than announced") }
            var offset = 0
            while offset < piece.count {
                let n = write(fd, piece.baseAddress! + offset, piece.count - offset)
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { throw HTTPError(507, "writing \(file.name): \(String(cString: strerror(errno)))") }
                offset += n
            }
            written += piece.count
        })
        guard answer.status == 200 else { throw HTTPError(502, "checkpoint file \(file.name): \(answer.status)") }
        guard written == file.size else { throw HTTPError(502, "checkpoint file \(file.name) cut short: \(written) of \(file.size) bytes") }
        guard fsync(fd) == 0 else { throw HTTPError(507, "syncing \(file.name): \(String(cString: strerror(errno)))") }
    }
}
