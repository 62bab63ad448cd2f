import Foundation
import KalavaraHTTP
import KalavaraSupport

/// Checks every known volume's `/health` about once a second and keeps the registry's
/// liveness current. Each check also tells the volume the master's URL and the URL the
/// master knows it by, so volumes started without `-m`/`-b` still learn both.
///
/// A check has a deadline shorter than the interval: a volume that accepts connections but
/// never answers (stopped, hung) fails a check at every tick instead of holding one open
/// across two, so it is marked down after `failuresBeforeDown` ticks (about 3 s), and reads
/// avoid it from its first failed check on (see `VolumeRegistry.liveURLs(among:)`).
///
/// The client's timeout bounds each socket operation (the connect, then every receive),
/// not the check: a volume that trickles its answer a byte at a time would never fail one.
/// So the deadline is also kept here, for the whole check: one still running at a tick
/// past its deadline counts as a failed check at that tick, and an answer that comes after
/// it does not count as a success.
final class HealthMonitor: @unchecked Sendable {
    private let registry: VolumeRegistry
    private let masterURL: String
    private let client: HTTPClient
    /// Signs the checks, and verifies the answers' signatures.
    private let secret: ClusterSecret?
    private let queue = DispatchQueue(label: "health", attributes: .concurrent)
    /// Every `interval` seconds, starts a check of each volume on `queue`.
    private let loop: BackgroundLoop<Void>
    /// Seconds a whole check may take.
    private let deadline: Double
    /// Guards `inFlight`.
    private let lock = NSLock()
    /// The volumes with a check queued or running, and when it started (monotonic seconds;
    /// infinity while queued).
    private var inFlight: [UInt16: Double] = [:]
    /// `--replicas`: volumes spanning fewer zones than that are logged.
    private let replicas: Int
    /// The zone count last logged about (touched only by the loop).
    private var zonesNoted: Int?

    init(registry: VolumeRegistry, masterURL: String, interval: Double = 1, secret: ClusterSecret? = nil, replicas: Int = 1) {
        self.replicas = replicas
        deadline = Self.deadline(interval: interval)
        client = HTTPClient(timeout: deadline, maxIdlePerHost: 1, signer: secret)
        self.secret = secret
        self.registry = registry
        self.masterURL = masterURL
        loop = BackgroundLoop("health-timer", schedule: .every(interval))
    }

    /// How long one check may take: most of an interval, so that it is over before the next
    /// tick (a check still running at a tick makes that tick skip the volume), at most 1 s,
    /// and never under 0.25 s, which a busy but working volume must be allowed.
    static func deadline(interval: Double) -> Double { max(0.25, min(1, interval * 0.8)) }

    /// Starts the checks, the first at once.
    func start() {
        loop.start { [weak self] in self?.checkAll() }
        loop.wake()
    }

    /// No check starts after this; checks already started run out on their own.
    func stop() { loop.stop() }

    private func checkAll() {
        noteZones()
        let now = monotonicSeconds()
        for volume in registry.present {
            lock.lock()
            let running = inFlight[volume.id]
            if running == nil { inFlight[volume.id] = .infinity } // queued: its time starts when it runs
            lock.unlock()
            if let started = running {
                // A check of this volume is still running: past its deadline, that is a failure.
                if now - started > deadline { record(volume, succeeded: false) }
                continue
            }
            queue.async { [self] in
                let started = monotonicSeconds()
                lock.lock()
                inFlight[volume.id] = started
                lock.unlock()
                check(volume, started: started)
                lock.lock()
                inFlight[volume.id] = nil
                lock.unlock()
            }
        }
    }

    private func check(_ volume: VolumeRegistry.Volume, started: Double) {
        var response = try? Self.ask(volume.url, masterURL: masterURL, client: client, secret: secret)
        if monotonicSeconds() - started > deadline { response = nil } // answered, but too late
        if let report = response.map({ HealthReport($0.headers) }), report.isDiskFull != volume.isDiskFull {
            if report.isDiskFull {
                Log.warning("volume \(volume.url) reports its disk full: it serves reads and deletes, refuses writes (507)")
            } else {
                Log.info("volume \(volume.url) has disk space again")
            }
        }
        record(volume, succeeded: response != nil, report: response.map { HealthReport($0.headers) } ?? HealthReport())
    }

    private func record(_ volume: VolumeRegistry.Volume, succeeded: Bool, report: HealthReport = HealthReport()) {
        if let change = registry.recordCheck(id: volume.id, succeeded: succeeded, report: report) {
            if change { Log.info("volume \(volume.url) is up") } else { Log.warning("volume \(volume.url) is down") }
        }
        guard succeeded, registry.volume(volume.id)?.isZoneUnstored == true else { return }
        // A standby's write is refused: the leader's, once applied, brings the zone here.
        for changed in (try? registry.storeZones()) ?? [] {
            Log.info("volume \(changed.url) is in zone \(changed.zone)")
        }
    }

    /// Says in the log when the volumes in service span fewer zones than `--replicas` (some
    /// keys then have two copies in one zone), and when that is over. A cluster that never
    /// named a zone hears it once, as information: its placement is as it always was.
    private func noteZones() {
        guard let zones = registry.settledZoneCount, zones != zonesNoted else { return }
        let before = zonesNoted
        zonesNoted = zones
        if zones < replicas {
            let named = registry.all.contains { $0.zone != Placement.defaultZone }
            let message = "volumes span \(zones) zone(s), fewer than --replicas \(replicas): some copies of a key share a zone"
            if named { Log.warning(message) } else { Log.info(message + " (no volume names a zone: see volume --zone)") }
        } else if let before, before < replicas {
            Log.info("volumes span \(zones) zones: every key's copies can be in distinct zones")
        }
    }

    /// One health check: `GET /health`, telling the volume who asks and the URL it is known
    /// by. The answer counts only with status 200 and, in a signed cluster, the volume's
    /// signature over its data bound to this check's signature: proof that the volume holds
    /// the cluster secret (which is also what an operator's `add-volume` asks for).
    static func ask(_ volumeURL: String, masterURL: String, client: HTTPClient, secret: ClusterSecret?) throws -> ClientResponse? {
        guard let url = HTTPURL(volumeURL + "/health") else { return nil }
        var headers = HTTPHeaders()
        headers.add(VolumeHeaders.master, masterURL)
        headers.add(VolumeHeaders.selfURL, volumeURL)
        headers = client.signed("GET", url, headers: headers)
        let response = try client.send("GET", url, headers: headers)
        guard response.status == 200 else { return nil }
        if let secret,
           !SignedCall.verifyHealthAnswer(response.headers, requestHeaders: headers, secret: secret) {
            return nil
        }
        return response
    }
}
