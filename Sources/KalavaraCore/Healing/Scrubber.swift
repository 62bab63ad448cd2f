import Foundation
import KalavaraSupport
import Synchronization

/// Reads every value file on the volume and checks it against its checksum, at a bounded
/// byte rate: a pass starts on `POST /admin/scrub` and by itself every `--scrub-every`
/// seconds. A corrupt file goes to quarantine and the master is told (it has the key
/// copied again from a good holder).
///
/// The same pass is the backstop for leaked copies, whatever leaked them: it asks the
/// master, a batch at a time, whether each file's version is still wanted, and removes a
/// file older than the orphan grace only when the master positively knows a newer version
/// or a delete of its key — never because a key is merely unknown (an index restored from
/// a backup, or a rebuild still running, must not make a volume delete values). Files of
/// keys the index does not know are counted and reported (`/admin/volumes`, `/metrics`).
///
/// The counters are the loop's status.
final class Scrubber: Sendable {
    /// What `GET /admin/scrub` shows. The loop's status is one of these, whose `running`,
    /// `passes` and `lastPassFinished` `snapshot` fills in from the loop's progress.
    struct Progress: Encodable, Sendable {
        var running = false
        var checked = 0
        var corrupt = 0
        var unverified = 0
        var bytesChecked = 0
        var staleRemoved = 0
        /// Null before a pass has asked the master about every file.
        @NullWhenAbsent var unknownFiles: Int? = nil
        var passes = 0
        /// Unix seconds; null before the first pass.
        @NullWhenAbsent var lastPassFinished: Int? = nil
    }

    private unowned let volume: Volume
    private let limiter: RateLimiter
    private let grace: Double
    /// A pass `--scrub-every` seconds after the last ended, or when asked for; on an
    /// idle-class thread, as it reads every file.
    private let loop: BackgroundLoop<Progress>
    static let page = 500

    init(volume: Volume, bytesPerSecond: Double, every: Double, grace: Double) {
        self.volume = volume
        limiter = RateLimiter(bytesPerSecond: bytesPerSecond)
        self.grace = grace
        loop = BackgroundLoop("scrub", schedule: .pausing(every), idle: true, status: Progress())
        let metrics = volume.metrics
        metrics.gauge("kalavara_scrub_checked", "Value files checked by the current or last scrub pass") { [loop] in
            Double(loop.status.checked)
        }
        metrics.gauge("kalavara_scrub_corrupt", "Value files found corrupt (moved to quarantine) since start") { [loop] in
            Double(loop.status.corrupt)
        }
        metrics.gauge("kalavara_scrub_unverified", "Files of the format without a checksum seen by the last pass") { [loop] in
            Double(loop.status.unverified)
        }
        metrics.gauge("kalavara_unknown_files", "Value files of keys the master's index does not know (last pass)") { [loop] in
            Double(loop.status.unknownFiles ?? 0)
        }
        metrics.gauge("kalavara_scrub_stale_removed", "Files the scrub removed because the master knows a newer version") { [loop] in
            Double(loop.status.staleRemoved)
        }
    }

    var snapshot: Progress {
        let progress = loop.progress
        var snapshot = progress.status
        snapshot.running = progress.running
        snapshot.passes = progress.rounds
        snapshot.lastPassFinished = progress.lastRoundFinished.map { Int($0) }
        return snapshot
    }

    func start() { loop.start { [self] in pass() } }

    /// Returns once a pass in flight has stopped (between two files).
    func stop() { loop.stop() }

    /// Starts a pass now; false if one is running already.
    func request() -> Bool {
        guard !loop.progress.running else { return false }
        loop.wake()
        return true
    }

    func countCorrupt() { loop.report { $0.corrupt += 1 } }

    private func pass() {
        loop.report {
            $0.checked = 0
            $0.unverified = 0
            $0.bytesChecked = 0
        }
        Log.info("scrub pass started")
        var cursor: String?
        var unknown = 0
        var askedAll = true
        while !loop.isStopping {
            let names = volume.store.fileNames(after: cursor, limit: Self.page)
            var candidates: [(key: Key, version: UInt64)] = []
            let oldEnough = Int(Date().timeIntervalSince1970 - grace)
            for name in names where !loop.isStopping {
                guard let value = check(name) else { continue }
                if value.modified < oldEnough, !volume.journal.isPending(value.key, version: value.version) {
                    candidates.append((value.key, value.version))
                }
            }
            if !candidates.isEmpty, !loop.isStopping {
                if let verdicts = volume.master.wanted(candidates) {
                    for (file, verdict) in zip(candidates, verdicts) {
                        if verdict == .unknown { unknown += 1 }
                        guard verdict == .drop else { continue }
                        do {
                            try volume.dropVersion(file.key, file.version)
                            loop.report { $0.staleRemoved += 1 }
                            Log.info("scrub removed \(file.key) v\(file.version): the master knows a newer version or a delete")
                        } catch {
                            Log.error("scrub: removing stale \(file.key) v\(file.version): \(error)")
                        }
                    }
                } else {
                    askedAll = false
                }
            }
            guard names.count == Self.page, let last = names.last else { break }
            cursor = last
        }
        // A pass stopped midway is not counted (see `BackgroundLoop.Progress.rounds`).
        let finished = !loop.isStopping
        if finished, askedAll { loop.report { $0.unknownFiles = unknown } }
        let p = loop.status
        Log.info("scrub pass \(finished ? "finished" : "stopped"): checked \(p.checked) file(s), \(p.bytesChecked) bytes, "
                 + "corrupt \(p.corrupt) since start, unverified \(p.unverified), unknown to the master \(p.unknownFiles.map(String.init) ?? "?")")
    }

    /// Checks one file; the file if it is in service afterwards.
    private func check(_ name: String) -> StoredValue? {
        let value: StoredValue
        do {
            guard let opened = try volume.store.open(fileNamed: name) else { return nil }
            value = opened
        } catch StorageError.corrupt(let reason) {
            _ = try? volume.store.quarantine(fileNamed: name)
            countCorrupt()
            Log.error("scrub: \(reason): moved to quarantine")
            volume.master.reportDamaged(fileNamed: name)
            return nil
        } catch {
            Log.error("scrub: \(name): \(error)")
            return nil
        }
        let verdict: FileStore.Verdict
        do {
            // Once the loop is stopping, the file in hand is read at full speed: a stop waits
            // for it, and a large file at a low rate would hold the volume's shutdown.
            verdict = try volume.store.verify(value) { [loop, limiter] bytes in
                if !loop.isStopping { limiter.take(bytes) }
            }
        } catch {
            Log.error("scrub: reading \(name): \(error)")
            return nil
        }
        loop.report {
            $0.checked += 1
            $0.bytesChecked += value.size
            if verdict == .unverified { $0.unverified += 1 }
        }
        if verdict == .corrupt {
            volume.quarantine(value, reason: "failed its checksum in a scrub")
            return nil
        }
        return value
    }
}
