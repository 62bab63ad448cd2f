import Foundation
import KalavaraHTTP

/// A real single-member etcd (Debian's `etcd-server`) on free 127.0.0.1 ports, in a fresh
/// temporary data directory, for tests of what the masters keep in it. It can be stopped,
/// killed, restarted on the same data and ports, and paused; its directory goes with it.
///
/// Raft's timers are 10 times shorter than etcd's defaults (heartbeat 50 ms, election
/// 250 ms): it elects itself in well under a second, and its shortest lease is 1 s instead
/// of 2 s, so lease tests wait less.
public final class EtcdServer {
    public let clientPort: Int
    public let peerPort: Int
    /// Holds the data directory and the log.
    public let root: String
    private let executable: String
    private var process: Process?

    /// The client URL, where the v3 JSON gateway answers.
    public var endpoint: HTTPURL { HTTPURL("http://127.0.0.1:\(clientPort)")! }
    public var logPath: String { root + "/etcd.log" }
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Starts etcd and returns once it answers; skips the test where etcd is missing (fails it in CI).
    public init() throws {
        let found = executableInPath("etcd")
        try require(found != nil, "etcd is needed (scripts/install-deps installs Debian's etcd-server)")
        executable = found!
        clientPort = freeLoopbackPort()
        peerPort = freeLoopbackPort()
        root = NSTemporaryDirectory() + "kalavara-etcd-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try start()
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Starts etcd again after `stop()` or `kill()`, on the same data directory and ports.
    public func restart() throws {
        kill()
        try start()
    }

    /// SIGTERM, and SIGKILL if it has not exited within 5 s.
    public func stop() {
        guard let process, process.isRunning else { return }
        resume()
        Glibc.kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        kill()
    }

    /// SIGKILL: gone at once, as in a crash.
    public func kill() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGSTOP: its sockets still accept connections, but nothing answers, as on a hung machine.
    public func pause() { deliver(SIGSTOP) }

    /// SIGCONT, after `pause()`.
    public func resume() { deliver(SIGCONT) }

    private func deliver(_ number: Int32) {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, number)
    }

    private func start() throws {
        let client = "http://127.0.0.1:\(clientPort)"
        let peer = "http://127.0.0.1:\(peerPort)"
        process = try launchLogged(executable, [
            "--name", "test", "--data-dir", root + "/data",
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "test=\(peer)",
            "--heartbeat-interval", "50", "--election-timeout", "250",
            "--logger", "zap", "--log-outputs", "stderr",
        ], logPath: logPath)
        try waitUntilAnswering()
    }

    /// Waits until `/health` says true: etcd has a leader and serves reads.
    private func waitUntilAnswering(timeout: Double = 15) throws {
        let client = HTTPClient(timeout: 1, maxIdlePerHost: 0)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process?.isRunning == true else { break }
            if let answer = try? client.send("GET", HTTPURL("http://127.0.0.1:\(clientPort)/health")!),
               answer.status == 200, answer.text.contains("\"true\"") {
                return
            }
            usleep(20_000)
        }
        kill()
        throw EtcdServerError(description: "etcd on port \(clientPort) did not come up; its log:\n\(log)")
    }
}

public struct EtcdServerError: Error, CustomStringConvertible {
    public let description: String
}
