import Foundation
import KalavaraSupport

/// Removes value files whose commit never happened: failed commits, writes that lost to a
/// newer version, copies a replica never heard the outcome of.
///
/// It looks only at the uncommitted journal's entries older than the grace period (checked
/// every `max(1, grace/2)` seconds), and for each asks the master, which answers whether
/// the version is current and, if not, fences it so a late commit can never name a file
/// that is about to go. Each removal is logged.
final class OrphanSweeper: Sendable {
    private unowned let volume: Volume
    private let grace: Double
    private let loop: BackgroundLoop<Void>
    static let batch = 500

    init(volume: Volume, grace: Double) {
        self.volume = volume
        self.grace = grace
        loop = BackgroundLoop("orphans", schedule: .every(max(1, grace / 2)))
    }

    func start() { loop.start { [weak self] in self?.pass() } }
    /// Returns once a pass in flight has stopped (between two entries).
    func stop() { loop.stop() }

    func pass() {
        let due = volume.journal.entries(olderThan: Date().timeIntervalSince1970 - grace, limit: Self.batch)
        guard !due.isEmpty else { return }
        guard let identity = volume.master.identity else {
            Log.warning("\(due.count) uncommitted file(s) to check, but the master is not known yet")
            return
        }
        for entry in due {
            guard !loop.isStopping else { return }
            guard volume.store.versions(of: entry.key).contains(entry.version) else {
                volume.journal.strike(entry.key, version: entry.version) // already gone
                continue
            }
            switch volume.master.resolve(entry.key, version: entry.version, master: identity.master, me: identity.me) {
            case .committed:
                volume.journal.strike(entry.key, version: entry.version)
                for older in volume.store.versions(of: entry.key) where older < entry.version {
                    try? volume.dropVersion(entry.key, older)
                }
            case .unjudged(let status, let reason):
                // The master cannot judge this entry (a bad key, an unknown volume): it stays
                // for the scrub's backstop, and the entries after it are still checked.
                Log.warning("the master cannot resolve \(entry.key) v\(entry.version): \(status) \(reason)")
            case .orphan:
                do {
                    try volume.dropVersion(entry.key, entry.version)
                    Log.info("removed orphan \(entry.key) v\(entry.version)")
                } catch {
                    Log.error("removing orphan \(entry.key) v\(entry.version): \(error)")
                }
            case .unreachable(let reason):
                Log.warning("cannot check uncommitted files with the master: \(reason)")
                return
            }
        }
    }
}
