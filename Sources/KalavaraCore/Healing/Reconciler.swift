import Foundation
import KalavaraHTTP
import KalavaraSupport
import Prometheus
import Synchronization

/// The placement reconciler: one mechanism that keeps every key at `--replicas` copies on
/// its placement, whatever changed — a volume going out, one coming back, one added, one
/// drained, a copy found corrupt.
///
/// A pass walks the index in key order from a cursor persisted in RocksDB (a restarted
/// master resumes there) and compares each record's holders with the key's placement,
/// asking no volume anything about a key that is in place. Keys short of copies are fixed
/// as they are found; misplaced ones are set aside and fixed after the walk. A fix has a
/// live holder stream the value to each missing placement volume (volume to volume,
/// checked against the value's checksum at the target), then commits the new holder set
/// for the same version through the commit protocol — refused if the key changed meanwhile,
/// so a client's write always wins — and queues the copies that are no longer needed on
/// the removal queue. Copies run on a bounded number of threads under a byte-rate limit;
/// no key lock is held across one.
///
/// Sendable by hand: counters are behind `progress`, requests behind `requests`; the
/// loop's own state (`lastPassStart`, `lastSeen`) is touched only by `start`, before the
/// loop runs, and by the loop.
final class Reconciler: @unchecked Sendable {
    /// What `GET /admin/repair` shows.
    struct Progress: Encodable, Sendable {
        var running = false
        var scanned = 0
        var underReplicated = 0
        var misplaced = 0
        var copied = 0
        var bytesCopied = 0
        var removed = 0
        var errors = 0
        var passes = 0
        /// Unix seconds; null before the first pass.
        @NullWhenAbsent var lastPassFinished: Int? = nil
    }

    unowned let master: any HealingMaster
    let replicas: Int
    let copyClient: HTTPClient
    let noticeClient: HTTPClient
    let limiter: RateLimiter
    /// Index records examined per second at most (the walk's own CPU: on this VM's two
    /// vCPUs even an idle-class thread slowed the event loop while it ran flat out).
    private let scanLimiter: RateLimiter
    /// Copies in flight at most.
    let slots: DispatchSemaphore
    /// Threads of their own, not Dispatch's: a copy blocks on the network for as long as
    /// the volumes take, and Dispatch on Linux runs no more blocking items at once than
    /// there are cores (with 4 or 16 copies allowed, 2 ran).
    let workers = WorkerPool()
    let inFlight = DispatchGroup()
    let progress = Mutex(Progress())
    /// A pass wanted (and whether it must start from the first key), keys to fix first.
    private let requests = Mutex<(pass: Bool, fromStart: Bool, urgent: [Key])>((false, false, []))
    /// Looks at the placement once a second, or at once when woken, and runs a pass when
    /// one is wanted; on an idle-class thread.
    private let loop = BackgroundLoop("reconciler", schedule: .pausing(1), idle: true)
    private let interval: Double
    /// When the last pass started, and the placement the loop last saw.
    private var lastPassStart = 0.0
    private var lastSeen = Signature()
    /// Set when a fix waited for a queued removal on its target: another pass once the
    /// removal worker has had time to do it.
    let retrySoon = Atomic(false)
    /// Keys with a fix in flight: a key is fixed by one thread at a time, and the master's
    /// orphan check gives no verdict on a copy being made for one.
    let fixing = Mutex<Set<Key>>([])
    /// A pass asked for by the last one (a drain not done yet, keys set aside that did not
    /// fit): when to start it. Soon if the last pass moved something, in a minute if not
    /// (a drain that cannot progress must not walk the index back to back).
    private let followUpAt = Mutex<Double?>(nil)
    /// Damaged files reported by name (their header no longer says the key), by version:
    /// the next pass finds the key whose current version that is. Memory only.
    private let damaged = Mutex<[UInt64: [(volume: UInt16, stem: String)]]>([:])
    let metrics: (copies: Counter, bytes: Counter, removals: Counter, errors: Counter, scanned: Counter)
    /// Keys found set aside for after the walk, at most; more make the pass run again.
    static let deferredLimit = 100_000
    static let batch = 1000
    /// Seconds before a pass is repeated for keys that waited on a queued removal.
    static let retryDelay = 5.0

    init(master: any HealingMaster, secret: ClusterSecret?, metrics m: Metrics, replicas: Int, copiesInFlight: Int,
         bytesPerSecond: Double, interval: Double, keysPerSecond: Double = 0) {
        scanLimiter = RateLimiter(bytesPerSecond: keysPerSecond)
        copyClient = HTTPClient(timeout: 600, maxIdlePerHost: 8, signer: secret)
        noticeClient = HTTPClient(timeout: 5, maxIdlePerHost: 4, signer: secret)
        self.master = master
        self.replicas = replicas
        slots = DispatchSemaphore(value: max(1, copiesInFlight))
        limiter = RateLimiter(bytesPerSecond: bytesPerSecond)
        self.interval = interval
        metrics = (m.counter("kalavara_repair_copies_total", "Copies the reconciler made"),
                   m.counter("kalavara_repair_copied_bytes_total", "Bytes the reconciler copied between volumes"),
                   m.counter("kalavara_repair_removals_total", "Copies the reconciler queued for removal"),
                   m.counter("kalavara_repair_errors_total", "Copies or commits of the reconciler that failed"),
                   m.counter("kalavara_repair_scanned_total", "Index records the reconciler examined"))
        m.gauge("kalavara_repair_under_replicated", "Keys short of copies found by the current or last pass") { [unowned self] in
            Double(progress.withLock { $0.underReplicated })
        }
        m.gauge("kalavara_repair_misplaced", "Keys off their placement found by the current or last pass") { [unowned self] in
            Double(progress.withLock { $0.misplaced })
        }
        m.gauge("kalavara_repair_running", "1 while a placement pass runs") { [unowned self] in
            progress.withLock { $0.running } ? 1 : 0
        }
    }

    var snapshot: Progress { progress.withLock { $0 } }

    func start() {
        // A pass cut short by a restart resumes where it was.
        if (try? master.repairCursor()) != nil { requestPass(fromStart: false) }
        lastPassStart = monotonicSeconds()
        lastSeen = signature(PlacementView(registry: master.registry, replicas: replicas))
        loop.start { [self] in tick() }
    }

    /// Returns once a pass in flight has stopped: its walk stops at the next page, and the
    /// copies already started are waited for.
    func stop() { loop.stop() }

    /// Asks for a full pass (`POST /admin/repair`, a state change). A pass running now
    /// finishes, then another starts from the first key.
    func requestPass(fromStart: Bool = true) {
        requests.withLock {
            $0.pass = true
            $0.fromStart = $0.fromStart || fromStart
        }
        loop.wake()
    }

    /// Notes a damaged file and asks for a pass to find its key.
    func noteDamaged(volume: UInt16, stem: String, version: UInt64) {
        damaged.withLock { $0[version, default: []].append((volume, stem)) }
        requestPass()
    }

    /// Asks for one key to be looked at soon (a copy found corrupt).
    func requestKey(_ key: Key) {
        requests.withLock { $0.urgent.append(key) }
        loop.wake()
    }

    // MARK: The loop

    private func tick() {
        guard !master.isRebuilding else { return } // a half-built index would look all wrong
        let last = lastSeen
        let view = PlacementView(registry: master.registry, replicas: replicas)
        let now = signature(view)
        // Which volumes count changed (out, added, drained), or a volume's zone, or one came
        // back or has disk space again (keys placed around it while it was full go back): a pass.
        if now.counting != last.counting || now.zones != last.zones || !now.live.isSubset(of: last.live)
            || !last.full.isSubset(of: now.full) {
            Log.info("placement changed (volumes counting: \(now.counting.count) in \(view.zoneCount) zone(s), "
                     + "live: \(now.live.count)): repair pass")
            requestPass()
        }
        lastSeen = now
        if monotonicSeconds() - lastPassStart >= interval { requestPass() }
        if monotonicSeconds() - lastPassStart >= Self.retryDelay, retrySoon.exchange(false, ordering: .relaxed) {
            requestPass()
        }
        let followUp = followUpAt.withLock { at -> Bool in
            guard let due = at, monotonicSeconds() >= due else { return false }
            at = nil
            return true
        }
        if followUp { requestPass() }
        fixUrgent()
        let wanted = requests.withLock { state -> (Bool, Bool) in
            defer { state.pass = false; state.fromStart = false }
            return (state.pass, state.fromStart)
        }
        if wanted.0 {
            lastPassStart = monotonicSeconds()
            pass(fromStart: wanted.1)
        }
    }

    /// What of the placement the loop watches for changes.
    private struct Signature {
        var counting: Set<UInt16> = [], live: Set<UInt16> = [], full: Set<UInt16> = []
        var zones: [UInt16: String] = [:]
    }

    private func signature(_ view: PlacementView) -> Signature {
        Signature(counting: view.countingIDs, live: view.live, full: view.full,
                  zones: view.zones.filter { view.countingIDs.contains($0.key) })
    }

    private func fixUrgent() {
        let keys = requests.withLock { state -> [Key] in
            defer { state.urgent = [] }
            return state.urgent
        }
        for key in keys { schedule(key) }
        waitForCopies()
    }

    private func pass(fromStart: Bool) {
        var cursor = fromStart ? nil : (try? master.repairCursor()) ?? nil
        let wholeIndex = cursor == nil
        progress.withLock {
            $0.running = true
            $0.scanned = 0
            $0.underReplicated = 0
            $0.misplaced = 0
        }
        let started = monotonicSeconds()
        var lastLog = started
        var deferred: [Key] = []
        var overflow = false
        var drainingHeld: [UInt16: Int] = [:]
        var reachedEnd = false
        let before = snapshot
        Log.info("repair pass started" + (wholeIndex ? "" : " (resumed)"))
        walk: while !loop.isStopping, !master.isRebuilding {
            let page: (records: [(Key, IndexRecord)], last: [UInt8]?, rows: Int, damaged: Int)
            do {
                page = try master.walkIndex(after: cursor, limit: Self.batch)
            } catch {
                fail("repair pass: cannot read the index (\(error))")
                break walk
            }
            let batch = page.records
            if page.damaged > 0 { fail("repair pass: \(page.damaged) index record(s) cannot be decoded") }
            let view = PlacementView(registry: master.registry, replicas: replicas)
            var short = 0, misplaced = 0, scanned = 0
            let damagedNow = damaged.withLock { $0 }
            for (key, record) in batch where !record.isTombstone {
                scanned += 1
                if !damagedNow.isEmpty, let reports = damagedNow[record.version] {
                    let stem = FileStore.fileStem(key)
                    for report in reports where report.stem == stem {
                        damaged.withLock { $0[record.version] = nil }
                        if (try? master.dropCorruptHolder(key, version: record.version, holder: report.volume,
                                                          keepingLast: false)) == true {
                            Log.error("repair: the damaged file v\(record.version) was \(key)'s copy; holder dropped")
                            requestKey(key)
                        }
                    }
                }
                switch view.assess(key, record) {
                case .inPlace:
                    continue
                case .short:
                    short += 1
                    schedule(key)
                case .misplaced:
                    misplaced += 1
                    if deferred.count < Self.deferredLimit { deferred.append(key) } else { overflow = true }
                }
                for holder in record.holders where view.states[holder] == .draining { drainingHeld[holder, default: 0] += 1 }
            }
            metrics.scanned.increment(by: Int64(scanned))
            scanLimiter.take(page.rows)
            progress.withLock {
                $0.scanned += scanned
                $0.underReplicated += short
                $0.misplaced += misplaced
            }
            fixUrgent()
            if let last = page.last { cursor = last }
            try? master.setRepairCursor(cursor)
            if monotonicSeconds() - lastLog >= 10 {
                lastLog = monotonicSeconds()
                logProgress("repair pass", since: started)
            }
            if page.rows < Self.batch {
                reachedEnd = true
                break walk
            }
        }
        waitForCopies()
        for key in deferred where !loop.isStopping {
            schedule(key)
            if monotonicSeconds() - lastLog >= 10 {
                lastLog = monotonicSeconds()
                logProgress("repair pass, misplaced keys", since: started)
            }
        }
        waitForCopies()
        let finished = reachedEnd && !loop.isStopping && !master.isRebuilding
        if finished {
            try? master.setRepairCursor(nil)
            // Reports whose version no key has any more (overwritten meanwhile) are moot.
            if wholeIndex { damaged.withLock { $0 = [:] } }
        }
        progress.withLock {
            $0.running = false
            if finished {
                $0.passes += 1
                $0.lastPassFinished = Int(Date().timeIntervalSince1970)
            }
        }
        guard finished else { return }
        logProgress("repair pass finished", since: started)
        let after = snapshot
        let moved = after.copied != before.copied || after.removed != before.removed
        var again = overflow
        if wholeIndex {
            again = finishDrains(stillHeld: drainingHeld) || again
        } else if master.registry.all.contains(where: { $0.mode == .draining }) {
            again = true
        }
        if again { followUpAt.withLock { $0 = monotonicSeconds() + (moved ? 0 : Self.idleBackoff) } }
    }

    /// Seconds between passes that change nothing but are asked for again.
    static let idleBackoff = 60.0

    /// Whether a fix of `key` is in flight (its copies may not be committed yet).
    func isFixing(_ key: Key) -> Bool { fixing.withLock { $0.contains(key) } }

    /// A draining volume that no key needs any more, and whose copies the removal queue has
    /// cleared (or that is down, so they cannot be), leaves the registry. Keys it still held
    /// at the start of this pass were moved during it: the next pass confirms.
    /// Returns whether another pass is needed.
    private func finishDrains(stillHeld: [UInt16: Int]) -> Bool {
        var again = false
        for volume in master.registry.all where volume.mode == .draining {
            let cleared = !volume.isLive || master.pendingRemovals(volume: volume.id, limit: 1).isEmpty
            if stillHeld[volume.id, default: 0] == 0, cleared {
                do {
                    try master.registry.setMode(volume.id, .removed)
                    Log.info("volume \(volume.url) drained: no key needs it any more; removed")
                } catch {
                    Log.error("removing drained volume \(volume.url): \(error)")
                }
            } else if stillHeld[volume.id, default: 0] == 0 {
                retrySoon.store(true, ordering: .relaxed) // its removals are still being done
            } else {
                again = true
            }
        }
        return again
    }

    func logProgress(_ what: String, since start: Double?) {
        let p = snapshot
        Log.info("\(what): scanned \(p.scanned), short of copies \(p.underReplicated), misplaced \(p.misplaced), "
                 + "copied \(p.copied) (\(p.bytesCopied) bytes), removals \(p.removed), errors \(p.errors)"
                 + (start.map { String(format: ", %.1f s", monotonicSeconds() - $0) } ?? ""))
    }
}
