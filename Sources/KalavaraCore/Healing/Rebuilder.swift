import Foundation
import KalavaraHTTP
import KalavaraSupport
import Synchronization

/// Rebuilds the master's index from the volumes' files: for a master whose index was lost,
/// started on an empty `-d` with the volumes in `-v`.
///
/// Every volume streams an inventory of its value files (key, version, size, checksum), a
/// page at a time, from `GET /internal/inventory`; each entry is merged into the index
/// under the key's lock: the newest version found wins and lists every volume holding it,
/// older copies are queued for removal, and the version clock moves past every version
/// seen. Online: clients keep working while it runs; a read or delete of a key not found
/// yet answers `503`, never `404`. A restarted master resumes an unfinished rebuild, as
/// does one whose rebuild was stopped (`stop`, on the master's shutdown).
final class Rebuilder: Sendable {
    /// What `GET /admin/rebuild` shows.
    struct Progress: Encodable, Sendable {
        var running = false
        var volumesDone = 0
        var volumesTotal = 0
        var keysFound = 0
        var filesSeen = 0
        var errors = 0
    }

    private unowned let master: any HealingMaster
    private let client: HTTPClient
    private let progress = Mutex(Progress())
    /// A rebuild when woken, by `start`; it reads the volumes on a thread each.
    private let loop = BackgroundLoop("rebuild", schedule: .onWake)
    static let pageSize = 1000
    /// How long a volume that does not answer is retried before the rebuild goes on without it.
    static let patience = 60.0

    init(master: any HealingMaster, secret: ClusterSecret?) {
        self.master = master
        client = HTTPClient(timeout: 60, maxIdlePerHost: 4, signer: secret)
    }

    var snapshot: Progress { progress.withLock { $0 } }

    /// Starts a rebuild unless one runs. Returns whether this call started it.
    @discardableResult
    func start() throws -> Bool {
        let started = progress.withLock { state -> Bool in
            guard !state.running else { return false }
            state = Progress(running: true)
            return true
        }
        guard started else { return false }
        try master.setRebuildPending(true)
        master.setRebuilding(true)
        loop.start { [self] in run() }
        loop.wake()
        return true
    }

    /// Stops a rebuild in flight between two pages and returns once it has: it stays
    /// pending, for the next start to resume.
    func stop() { loop.stop() }

    private func run() {
        let volumes = master.registry.present
        progress.withLock { $0.volumesTotal = volumes.count }
        Log.info("index rebuild started from \(volumes.count) volume(s)")
        let group = DispatchGroup()
        // A thread per volume for this round: each blocks on its volume's answers.
        for volume in volumes {
            group.enter()
            let thread = Thread { [self] in
                defer { group.leave() }
                if rebuild(from: volume) { progress.withLock { $0.volumesDone += 1 } }
            }
            thread.name = "rebuild-volume"
            thread.start()
        }
        group.wait()
        let p = snapshot
        guard p.volumesDone == volumes.count else {
            Log.info("index rebuild stopped after \(p.volumesDone) of \(volumes.count) volume(s); the next start resumes it")
            return
        }
        do {
            try master.setRebuildPending(false) // synced: covers every merge before it
        } catch {
            Log.error("index rebuild: cannot record completion: \(error)")
        }
        master.setRebuilding(false)
        progress.withLock { $0.running = false }
        Log.info("index rebuild finished: \(p.keysFound) key(s) from \(p.filesSeen) file(s) on \(p.volumesDone) volume(s), "
                 + "\(p.errors) error(s)")
        master.requestRepairPass()
    }

    /// Merges one volume's inventory. Returns false if the loop was stopped first (a
    /// volume given up on counts as done).
    private func rebuild(from volume: VolumeRegistry.Volume) -> Bool {
        var cursor: String?
        var lastSuccess = monotonicSeconds()
        while !loop.isStopping {
            var query = QueryParameters()
            query.add("limit", String(Self.pageSize))
            if let cursor { query.add("after", cursor) }
            guard let url = HTTPURL("\(volume.url)/internal/inventory?\(query.encoded)") else { return true }
            let page: Inventory.Page
            do {
                let answer = try client.send("GET", url)
                guard answer.status == 200 else { throw HTTPError(answer.status, answer.text) }
                page = try Inventory.Page(parsing: answer.body)
            } catch {
                if monotonicSeconds() - lastSuccess > Self.patience {
                    Log.error("index rebuild: giving up on \(volume.url): \(error)")
                    progress.withLock { $0.errors += 1 }
                    return true
                }
                loop.pause(1)
                continue
            }
            lastSuccess = monotonicSeconds()
            var found = 0
            for entry in page.entries {
                do {
                    if try merge(entry, holder: volume.id) { found += 1 }
                } catch {
                    Log.error("index rebuild: \(entry.key) v\(entry.version) from \(volume.url): \(error)")
                    progress.withLock { $0.errors += 1 }
                }
            }
            if let newest = page.entries.map(\.version).max(), newest < UInt64.max >> 1 { try? master.advanceClock(past: newest) }
            progress.withLock {
                $0.keysFound += found
                $0.filesSeen += page.entries.count
            }
            guard let next = page.next else { return true }
            cursor = next
        }
        return false
    }

    /// Merges one file into the index. Returns whether the key was new to it.
    private func merge(_ entry: Inventory.Entry, holder: UInt16) throws -> Bool {
        try master.keyLocks.withLock(for: entry.key) {
            var changes = Index.Changes()
            let current = try master.record(for: entry.key)
            if var record = current, record.version == entry.version, !record.isTombstone {
                guard !record.holders.contains(holder), record.holders.count < 16 else { return false }
                record.holders.append(holder)
                changes.setRecord(record, for: entry.key)
            } else if let record = current, record.version >= entry.version || record.rulesOut(entry.version) {
                // The index knows something newer (a write or delete since, or another
                // volume's newer copy): this copy is stale.
                try master.queueRemoval(&changes, volume: holder, key: entry.key, below: record.version)
            } else {
                changes.setRecord(IndexRecord(version: entry.version, size: entry.size, holders: [holder],
                                              floor: current?.floor ?? 0, checksum: entry.checksum), for: entry.key)
                if let record = current, !record.isTombstone {
                    for old in record.holders {
                        try master.queueRemoval(&changes, volume: old, key: entry.key, below: entry.version)
                    }
                }
            }
            try master.apply(changes, durable: false)
            return current == nil
        }
    }
}

/// The volume's inventory page format (`GET /internal/inventory?after=NAME&limit=N`):
/// a first line `next NAME` (or `next -` on the last page), then one line per value file:
/// `VERSION SIZE CHECKSUM KEY`, checksum the CRC-32 in hex or `-` for an unverified file,
/// key percent-encoded.
enum Inventory {
    struct Entry: Equatable {
        let key: Key
        let version: UInt64
        let size: UInt64
        let checksum: UInt32?

        var line: String {
            "\(version) \(size) \(checksum.map { String($0, radix: 16) } ?? "-") \(key.pathComponent)"
        }
    }

    struct Page {
        let entries: [Entry]
        let next: String?

        init(entries: [Entry], next: String?) {
            self.entries = entries
            self.next = next
        }

        var text: String {
            (["next \(next ?? "-")"] + entries.map(\.line)).joined(separator: "\n") + "\n"
        }

        init(parsing body: [UInt8]) throws {
            let lines = String(decoding: body, as: UTF8.self).split(separator: "\n")
            guard let first = lines.first, first.hasPrefix("next ") else { throw HTTPError(502, "not an inventory page") }
            let next = String(first.dropFirst(5))
            self.next = next == "-" ? nil : next
            entries = try lines.dropFirst().map { line in
                let parts = line.split(separator: " ", maxSplits: 3)
                guard parts.count == 4, let version = UInt64(parts[0]), let size = UInt64(parts[1]) else {
                    throw HTTPError(502, "bad inventory line")
                }
                return Entry(key: try Key(percentEncoded: parts[3]), version: version, size: size,
                             checksum: parts[2] == "-" ? nil : UInt32(parts[2], radix: 16))
            }
        }
    }
}
