import Foundation
import KalavaraHTTP
import KalavaraSupport

/// Works through the master's removal queue: asks each live volume to drop copies that are
/// no longer current (deleted keys, superseded versions on volumes that left the placement,
/// copies on volumes that were down when a delete or overwrite happened).
///
/// A pass reads only pending entries, a bounded number per volume, so its cost does not
/// grow with the number of keys. Volumes that are down are skipped until they are back.
final class RemovalWorker: Sendable {
    private unowned let master: Master
    private let client: HTTPClient
    private let loop: BackgroundLoop<Void>
    static let batchPerVolume = 200
    /// Removals younger than this are left alone: the volume that served the delete or the
    /// overwrite is usually about to report them done itself.
    static let settleSeconds = 5.0

    init(master: Master, interval: Double) {
        self.master = master
        client = HTTPClient(timeout: 5, maxIdlePerHost: 2, signer: master.gate.secret)
        loop = BackgroundLoop("removals", schedule: .every(interval))
    }

    func start() { loop.start { [weak self] in self?.pass() } }
    /// Returns once a pass in flight has stopped (between two removals).
    func stop() { loop.stop() }

    private func pass() {
        let settled = Date().timeIntervalSince1970 - Self.settleSeconds
        for volume in master.registry.present where volume.isLive {
            for (key, below) in master.index.pendingRemovals(volume: volume.id, limit: Self.batchPerVolume)
            where VersionClock.issueTime(of: below) < settled {
                guard !loop.isStopping else { return }
                guard let url = HTTPURL("\(volume.url)/internal/replica/\(key.pathComponent)?below=\(below)"),
                      let answer = try? client.send("DELETE", url), answer.status == 204 else {
                    break // the volume is struggling: try again next pass
                }
                do {
                    try master.recordRemoval(key, volume: volume.id, below: below)
                    Log.info("removed stale copies of \(key) older than v\(below) on \(volume.url)")
                } catch {
                    Log.error("recording removal of \(key) on \(volume.url): \(error)")
                }
            }
        }
    }
}
