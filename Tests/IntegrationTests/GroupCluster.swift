import Foundation
import KalavaraCore
import KalavaraHTTP
import Synchronization
import TestSupport
import XCTest

/// A master group for tests: a real etcd, masters started with `--etcd` on free ports, and
/// volumes that know every master (`-m A,B -b SELF`). Short leases keep failovers quick.
/// Sendable by hand: the writer and reader threads only read its constant URLs.
final class GroupCluster: @unchecked Sendable {
    let cluster: TestCluster
    let etcd: EtcdServer
    let masterPorts: [Int]
    private(set) var masters: [Int: Process] = [:]
    private(set) var volumePorts: [Int] = []
    let leaseTTL: Int
    let syncTimeout: Double

    /// With `zones`, one volume per entry, in that zone (`volumes` is then ignored).
    init(masters count: Int = 2, volumes: Int = 1, zones: [String] = [], leaseTTL: Int = 2, syncTimeout: Double = 1,
         volumeExtra: [String] = []) throws {
        try require(executableInPath("etcd") != nil, "etcd is needed (scripts/install-deps installs etcd-server)")
        etcd = try EtcdServer()
        cluster = try TestCluster()
        self.leaseTTL = leaseTTL
        self.syncTimeout = syncTimeout
        masterPorts = (0..<count).map { _ in freeLoopbackPort() }
        let list = masterPorts.map { "http://127.0.0.1:\($0)" }.joined(separator: ",")
        for index in 0..<(zones.isEmpty ? volumes : zones.count) {
            let port = freeLoopbackPort()
            let zone = zones.isEmpty ? [] : ["--zone", zones[index]]
            _ = try cluster.startVolume(port: port, extra: ["-m", list, "-b", cluster.volumeURL(port), "--heartbeat", "1"] + zone + volumeExtra)
            volumePorts.append(port)
        }
    }

    func url(_ master: Int) -> String { "http://127.0.0.1:\(masterPorts[master])" }

    func start(_ master: Int, extra: [String] = []) throws {
        var arguments = ["-p", String(masterPorts[master]), "-d", cluster.root + "/db-\(master)", "--bind", "127.0.0.1",
                         "--etcd", etcd.endpoint.description, "--lease-ttl", String(leaseTTL), "--sync-timeout", String(syncTimeout)]
        arguments += ["-v"] + volumePorts.map(cluster.volumeURL)
        masters[master] = try cluster.launch("master", arguments + extra, log: "master-\(master)")
        try cluster.waitForHealth(url(master))
    }

    func kill9(_ master: Int) { cluster.kill9(masters[master]) }

    func signal(_ master: Int, _ signal: Int32) {
        if let process = masters[master], process.isRunning { kill(process.processIdentifier, signal) }
    }

    func process(_ master: Int) -> Process? { masters[master] }

    /// `GET /admin/masters` on `master`, nil if it does not answer.
    func view(_ master: Int) -> ClusterStatus.Group? {
        guard let answer = try? HTTP.send("GET", url(master) + "/admin/masters", timeout: 2), answer.status == 200 else { return nil }
        return try? JSONDecoder().decode(ClusterStatus.Group.self, from: Data(answer.body))
    }

    /// Waits until one of `among` says it leads, and returns it.
    @discardableResult
    func waitForLeader(among: [Int]? = nil, timeout: Double = 20) throws -> Int {
        var leader: Int?
        do {
            try waitUntil("a leader", timeout: timeout) {
                leader = (among ?? Array(masterPorts.indices)).first { view($0)?.leader == url($0) }
                return leader != nil
            }
        } catch {
            throw ClusterError("\(error); logs:\n\(cluster.logText())")
        }
        return leader!
    }

    /// Waits until the leader counts `standby` in its in-sync set, and the standby knows it
    /// (it answers reads from its copy).
    func waitInSync(_ standby: Int, leader: Int, timeout: Double = 20) throws {
        do {
            try waitUntil("\(url(standby)) in sync", timeout: timeout) {
                view(leader)?.masters.contains { $0.url == url(standby) && $0.inSync } == true
                    && view(standby)?.masters.contains { $0.url == url(standby) && $0.inSync } == true
            }
        } catch {
            throw ClusterError("\(error); logs:\n\(cluster.logText())")
        }
    }

    /// Waits until `master` counts every volume up (a master checks their health itself,
    /// standbys too).
    func waitForVolumes(on master: Int) throws {
        try cluster.waitUntilVolumesUp(volumePorts.count, at: url(master), timeout: 20)
    }

    /// A client's PUT through `master`, following the redirects (to the leader, then a volume).
    func put(_ key: String, _ value: [UInt8], via master: Int) throws -> HTTP.Answer {
        try HTTP.follow("PUT", url(master) + "/store/" + key, body: value, redirects: 2)
    }

    func get(_ key: String, via master: Int) throws -> HTTP.Answer {
        try HTTP.follow("GET", url(master) + "/store/" + key, redirects: 2)
    }

    func shutdown() {
        for process in masters.values { cluster.kill9(process) }
        cluster.shutdown()
        etcd.stop()
    }
}

/// Clients writing distinct keys through whichever master answers, recording every `201`
/// and when it came.
final class Writers: @unchecked Sendable {
    private let acknowledged = Mutex<[(key: String, value: [UInt8], at: Double)]>([])
    private let stopping = Atomic(false)
    private var threads: [Thread] = []
    private let done = DispatchGroup()

    init(_ group: GroupCluster, clients: Int, prefix: String) {
        for client in 0..<clients {
            done.enter()
            let thread = Thread { [self] in
                var n = 0
                while !stopping.load(ordering: .relaxed) {
                    let key = "\(prefix)\(client)-\(n)"
                    let value = Array("value of \(key) ".utf8) + (0..<64).map { _ in UInt8.random(in: 0...255) }
                    var written = false
                    for master in group.masterPorts.indices where !written {
                        if let answer = try? group.put(key, value, via: master), answer.status == 201 {
                            let now = Date().timeIntervalSince1970
                            acknowledged.withLock { $0.append((key, value, now)) }
                            written = true
                        }
                    }
                    if !written { usleep(100_000) }
                    n += 1
                }
                done.leave()
            }
            threads.append(thread)
            thread.start()
        }
    }

    var writes: [(key: String, value: [UInt8], at: Double)] { acknowledged.withLock { $0 } }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        done.wait()
    }
}
