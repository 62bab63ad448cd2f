import Foundation
import Synchronization

/// The volumes the master knows, their ids in index records, and whether each is alive.
///
/// The list is persisted in the index whenever it grows, so a restarted master still knows
/// volumes that were added at run time. Liveness is memory only: after a restart every
/// volume counts as alive until its health checks say otherwise.
///
/// Readers (every redirect, on the event loop) copy the table out of a mutex that is only
/// ever held for an in-memory change; adding a volume writes the index outside it, under
/// a lock of its own, so no reader ever waits for that synced write.
public final class VolumeRegistry: Sendable {
    /// One volume as the master knows it: its id in index records, URL and liveness.
    public struct Volume: Sendable {
        public let id: UInt16
        public let url: String
        public let address: HTTPURL
        public fileprivate(set) var isLive = true
        public fileprivate(set) var consecutiveFailures = 0
        /// From the volume's last health answer.
        public fileprivate(set) var freeBytes: Int?
        public fileprivate(set) var valueCount: Int?
    }

    /// Failed checks in a row before a volume counts as down: at one check a second, a
    /// killed volume is noticed within about three seconds, and one lost packet is forgiven.
    public static let failuresBeforeDown = 3

    private let index: Index
    /// The table; a volume's id is its position.
    private let volumes: Mutex<[Volume]>
    /// Held by `add` across its index write, so additions happen one at a time.
    private let additions = Mutex(())

    public init(index: Index, seeds: [String]) throws {
        self.index = index
        var loaded: [Volume] = []
        for url in try index.volumeURLs() {
            guard let address = HTTPURL(url) else { continue }
            loaded.append(Volume(id: UInt16(loaded.count), url: url, address: address))
        }
        volumes = Mutex(loaded)
        for seed in seeds { _ = try add(seed) }
    }

    /// The canonical form of a volume base URL (`http://host:port`), or nil if `text` is not one.
    public static func normalize(_ text: String) -> String? {
        var trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let url = HTTPURL(trimmed), url.pathAndQuery == "/" else { return nil }
        return "http://\(url.authority)"
    }

    /// Adds a volume (idempotent) and marks it alive. Returns its id and whether it is new.
    @discardableResult
    public func add(_ text: String) throws -> (id: UInt16, isNew: Bool) {
        guard let url = Self.normalize(text), let address = HTTPURL(url) else {
            throw HTTPError(400, "not a volume base URL (want http://host:port): \(text.prefix(200))")
        }
        return try additions.withLock { _ in
            let known = volumes.withLock { volumes -> UInt16? in
                guard let existing = volumes.firstIndex(where: { $0.url == url }) else { return nil }
                volumes[existing].isLive = true
                volumes[existing].consecutiveFailures = 0
                return volumes[existing].id
            }
            if let known { return (known, false) }
            let current = volumes.withLock { $0 }
            guard current.count < Int(UInt16.max) else { throw HTTPError(507, "too many volumes") }
            try index.setVolumeURLs(current.map(\.url) + [url])
            let id = UInt16(current.count)
            volumes.withLock { $0.append(Volume(id: id, url: url, address: address)) }
            return (id, true)
        }
    }

    public var all: [Volume] { volumes.withLock { $0 } }

    public var liveURLs: [String] { all.filter(\.isLive).map(\.url) }

    /// The URLs of the live volumes among `ids`, in that order (one lock, no copies of
    /// the whole table: this runs for every read).
    public func liveURLs(among ids: [UInt16]) -> [String] {
        volumes.withLock { volumes in ids.compactMap { Int($0) < volumes.count && volumes[Int($0)].isLive ? volumes[Int($0)].url : nil } }
    }

    public func id(of url: String) -> UInt16? {
        let normal = Self.normalize(url) ?? url
        return all.first(where: { $0.url == normal })?.id
    }

    public func volume(_ id: UInt16) -> Volume? {
        volumes.withLock { Int(id) < $0.count ? $0[Int(id)] : nil }
    }

    /// Records a health check's outcome. Returns the liveness change, if any, for logging.
    public func recordCheck(id: UInt16, succeeded: Bool, freeBytes: Int? = nil, valueCount: Int? = nil) -> Bool? {
        volumes.withLock { volumes in
            guard Int(id) < volumes.count else { return nil }
            let wasLive = volumes[Int(id)].isLive
            if succeeded {
                volumes[Int(id)].consecutiveFailures = 0
                volumes[Int(id)].isLive = true
                if let freeBytes { volumes[Int(id)].freeBytes = freeBytes }
                if let valueCount { volumes[Int(id)].valueCount = valueCount }
            } else {
                volumes[Int(id)].consecutiveFailures += 1
                if volumes[Int(id)].consecutiveFailures >= Self.failuresBeforeDown { volumes[Int(id)].isLive = false }
            }
            let isLive = volumes[Int(id)].isLive
            return isLive == wasLive ? nil : isLive
        }
    }
}
