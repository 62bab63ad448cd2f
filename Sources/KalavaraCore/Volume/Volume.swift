import Foundation
import KalavaraHTTP
import KalavaraSupport
import Logging
import Prometheus

/// The volume daemon: a file store served over HTTP. `volume/main.swift` only parses flags
/// and calls `run`.
///
/// Sendable by hand: every stored property is Sendable or thread-safe, except `orphans`,
/// `server` (set once by `start` before the listener admits anyone), and `scrubber` and
/// `removals` (set once by `init`).
public final class Volume: @unchecked Sendable {
    let configuration: VolumeConfiguration
    let store: FileStore
    let journal: UncommittedJournal
    let master: MasterLink
    let metrics = Metrics()
    /// Copies whose journal record stood for their file's and directory's fsync.
    let journaledCopies: Counter
    /// Who may call what: in a signed cluster, tickets and internal calls need the secret.
    let gate: AccessGate
    /// Volume-to-volume calls: replica uploads, outcome notices, removals. Their timeout is
    /// well under a client's, so a hung replica (SIGSTOP) fails the write instead of hanging it.
    let replicaClient: HTTPClient
    /// Cleanup and notices that run after the client has its answer (see `afterAnswer`).
    let housekeeping = DispatchQueue(label: "housekeeping", attributes: .concurrent)
    private var orphans: OrphanSweeper!
    private(set) var scrubber: Scrubber!
    /// Batched removal of copies no longer wanted (see `Removals`).
    private(set) var removals: Removals!
    private(set) var server: HTTPServer!

    init(configuration: VolumeConfiguration) throws {
        self.configuration = configuration
        gate = try AccessGate(configuration: configuration.secretFile, authFile: nil)
        replicaClient = HTTPClient(timeout: 10, maxIdlePerHost: 16, signer: gate.secret)
        journaledCopies = metrics.counter("kalavara_journaled_copies",
                                          "Value copies made durable by their journal record instead of their own fsyncs")
        store = try FileStore(root: configuration.directory, metrics: metrics)
        journal = try UncommittedJournal(path: configuration.directory + "/uncommitted.journal")
        // After a crash: files the journal holds the only durable copy of, put back whole.
        let records = journal.unsettledRecords
        if !records.isEmpty {
            let changed = try store.replay(records)
            if changed > 0 { Log.warning("journal replay: \(changed) of \(records.count) recorded files restored") }
        }
        try journal.startCheckpoints(syncing: configuration.directory + "/data", every: configuration.checkpointEvery,
                                     measuredBy: metrics.histogram("kalavara_journal_checkpoint_duration_seconds",
                                                                   "Time of a journal checkpoint's syncfs"))
        do {
            try journal.checkpoint()
        } catch where SpaceReserve.isFull(error) {
            // The records stay in the journal, replayed harmlessly: start, reads and deletes first.
            Log.warning("journal checkpoint at start-up: \(error); retried once space returns")
        }
        store.startCounting()
        master = MasterLink(configuredMasters: configuration.masterURLs, selfURL: configuration.selfURL, metrics: metrics,
                            secret: gate.secret)
        metrics.gauge("kalavara_free_bytes", "Free bytes on the data filesystem") { [store] in Double(store.freeBytes()) }
        scrubber = Scrubber(volume: self, bytesPerSecond: configuration.scrubRate, every: configuration.scrubEvery,
                            grace: configuration.orphanGrace)
        removals = Removals(volume: self)
    }

    func start() throws {
        // Past a file size limit, write(2) must fail with EFBIG (answered 507), not kill us.
        signal(SIGXFSZ, SIG_IGN)
        server = HTTPServer(configuration: configuration.server, router: router, metrics: metrics)
        try server.start()
        server.reloadTLSOnHangup()
        configuration.masterURLs.forEach { server.trustPeer(url: $0) }
        gate.announce()
        master.startHeartbeat(interval: configuration.heartbeatInterval)
        orphans = OrphanSweeper(volume: self, grace: configuration.orphanGrace)
        orphans.start()
        scrubber.start()
        Log.info("listening on \(configuration.server.host):\(server.boundPort), data in \(configuration.directory), "
                 + "zone \(configuration.zone)")
    }

    func stop() {
        orphans?.stop()
        scrubber?.stop()
        master.stop()
        server?.stop()
        housekeeping.sync(flags: .barrier) {} // let started cleanup finish
        removals.stop()
        journal.close()
    }

    /// Runs until SIGINT/SIGTERM, then stops gracefully; a second signal exits at once.
    public static func run(_ configuration: VolumeConfiguration, logLevel: Logger.Level = .info) -> Int32 {
        Daemon.run("volume", logLevel: logLevel) {
            let volume = try Volume(configuration: configuration)
            volume.metrics.bootstrapSwiftMetrics()
            try volume.start()
            return volume.stop
        }
    }
}
