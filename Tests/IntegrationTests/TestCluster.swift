import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import TestSupport
import XCTest

/// Starts real `master` and `volume` processes on free loopback ports, in a temporary
/// directory, and stops them (kill -9 if need be) when the test ends.
final class TestCluster {
    let root: String
    private(set) var masterPort = 0
    private(set) var master: Process?
    var volumes: [Int: Process] = [:]
    var masterArguments: [String] = []
    /// Flags every volume this cluster starts gets.
    var volumeExtra: [String] = []
    /// `https` once `useTLS` gave the daemons a certificate, with the flags that do it.
    private(set) var scheme = "http"
    private(set) var tlsFlags: [String] = []
    private var logs: [String] = []

    static let binDirectory: String = {
        if let dir = ProcessInfo.processInfo.environment["KALAVARA_BIN"] { return dir }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        // The test binary lives in .build/<triple>/debug/<name>.xctest or next to the executables.
        while !FileManager.default.fileExists(atPath: dir + "/master"), dir.count > 1 {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }()

    init() throws {
        root = NSTemporaryDirectory() + "kalavara-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try require(FileManager.default.isExecutableFile(atPath: Self.binDirectory + "/master")
                        && FileManager.default.isExecutableFile(atPath: Self.binDirectory + "/volume"),
                    "master/volume binaries not found next to the tests: run `swift build` first (scripts/test does)")
    }

    deinit { shutdown() }

    var masterURL: String { "\(scheme)://127.0.0.1:\(masterPort)" }
    func volumeURL(_ port: Int) -> String { "\(scheme)://127.0.0.1:\(port)" }

    /// Daemons started from now on speak HTTPS with a certificate from `certificates` (and
    /// trust its CA), and so does this test process's client.
    func useTLS(_ certificates: TestCertificates) throws {
        let (certificate, key) = try certificates.leaf("daemon", serial: 1)
        tlsFlags = ["--tls-cert", certificate, "--tls-key", key, "--tls-ca", certificates.authority]
        scheme = "https"
        try TLSTrust.use(authority: certificates.authority)
    }
    func volumeDirectory(_ port: Int) -> String { root + "/volume-\(port)" }
    var databasePath: String { root + "/db" }

    /// Starts a master on a free port with the given volumes and extra flags.
    @discardableResult
    func startMaster(volumePorts: [Int], extra: [String] = []) throws -> Process {
        if masterPort == 0 { masterPort = freeLoopbackPort() }
        var arguments = ["-p", String(masterPort), "-d", databasePath, "--bind", "127.0.0.1"]
        if !volumePorts.isEmpty { arguments += ["-v"] + volumePorts.map(volumeURL) }
        arguments += tlsFlags + extra
        masterArguments = arguments
        let process = try launch("master", arguments, log: "master")
        master = process
        try waitForHealth(masterURL)
        return process
    }

    /// Restarts the master with the arguments it had.
    func restartMaster() throws {
        let process = try launch("master", masterArguments, log: "master")
        master = process
        try waitForHealth(masterURL)
    }

    /// Starts a volume on a free port (or `port`), optionally registering with the master.
    @discardableResult
    func startVolume(port: Int? = nil, register: Bool = false, extra: [String] = []) throws -> Int {
        let port = port ?? freeLoopbackPort()
        var arguments = ["-p", String(port), "-d", volumeDirectory(port), "--bind", "127.0.0.1"]
        if register {
            if masterPort == 0 { masterPort = freeLoopbackPort() }
            arguments += ["-m", masterURL, "-b", volumeURL(port), "--heartbeat", "0.5"]
        }
        arguments += tlsFlags + volumeExtra + extra
        volumes[port] = try launch("volume", arguments, log: "volume-\(port)")
        try waitForHealth(volumeURL(port))
        return port
    }

    /// A cluster of `count` volumes and a master that knows them.
    static func started(volumes count: Int = 1, masterExtra: [String] = [], volumeExtra: [String] = []) throws -> TestCluster {
        let cluster = try TestCluster()
        cluster.volumeExtra = volumeExtra
        let ports = try (0..<count).map { _ in try cluster.startVolume() }
        try cluster.startMaster(volumePorts: ports, extra: masterExtra)
        return cluster
    }

    var volumePorts: [Int] { volumes.keys.sorted() }

    func launch(_ binary: String, _ arguments: [String], log: String) throws -> Process {
        let logPath = root + "/\(log).log"
        let process = try launchLogged(binary.hasPrefix("/") ? binary : Self.binDirectory + "/" + binary, arguments, logPath: logPath)
        logs.append(logPath)
        return process
    }

    func waitForHealth(_ base: String, timeout: Double = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let response = try? HTTP.send("GET", base + "/health"), response.status == 200 { return }
            usleep(20_000)
        }
        throw ClusterError("\(base) did not become healthy; logs:\n\(logText())")
    }

    /// Waits until the master counts `count` volumes up (in a signed cluster, only once each
    /// signed health answer checked out); `headers` for a master with `--auth-file`.
    /// `at`: another master than this cluster's (one of a group's).
    func waitUntilVolumesUp(_ count: Int, headers: [(String, String)] = [], at master: String? = nil, timeout: Double = 10) throws {
        do {
            try waitUntil("\(count) volume(s) up", timeout: timeout) {
                let text = (try? HTTP.send("GET", (master ?? masterURL) + "/admin/volumes", headers: headers))?.text ?? ""
                return text.components(separatedBy: "\"state\":\"up\"").count - 1 >= count
            }
        } catch {
            throw ClusterError("\(error); logs:\n\(logText())")
        }
    }

    func kill9(_ process: Process?) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func killMaster() { kill9(master) }
    func killVolume(_ port: Int) { kill9(volumes[port]) }

    func logText() -> String {
        logs.map { path in "== \(path)\n" + ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "") }.joined(separator: "\n")
    }

    /// Value files (not temporary ones) under a volume's data directory.
    func valueFiles(_ port: Int) -> [String] {
        let data = volumeDirectory(port) + "/data"
        let enumerator = FileManager.default.enumerator(atPath: data)
        var files: [String] = []
        while let path = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: data + "/" + path, isDirectory: &isDirectory), !isDirectory.boolValue {
                files.append(path)
            }
        }
        return files
    }

    /// The versions of `key` stored on each volume, by port.
    func copies(of key: String) -> [Int: [String]] {
        let stem = FileStore.fileStem(try! Key(key))
        var result: [Int: [String]] = [:]
        for port in volumePorts {
            let names = valueFiles(port).map { ($0 as NSString).lastPathComponent }.filter { $0.hasPrefix(stem + ".") }
            if !names.isEmpty { result[port] = names.sorted() }
        }
        return result
    }

    /// The bytes of each copy of `key` (the value files, headers included).
    func copyContents(of key: String) -> [Data] {
        let stem = FileStore.fileStem(try! Key(key))
        return volumePorts.flatMap { port in
            valueFiles(port).filter { ($0 as NSString).lastPathComponent.hasPrefix(stem + ".") }
                .compactMap { FileManager.default.contents(atPath: volumeDirectory(port) + "/data/" + $0) }
        }
    }

    func tmpFiles(_ port: Int) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: volumeDirectory(port) + "/tmp")) ?? []
    }

    /// Other daemons of this cluster (S3 gateways), stopped with it.
    var others: [Process] = []

    /// Starts an S3 gateway for this cluster's master; returns its port once it answers.
    func startGateway(extra: [String] = []) throws -> Int {
        let port = freeLoopbackPort()
        let process = try launch("kalavara-s3", ["-p", String(port), "-m", masterURL, "--bind", "127.0.0.1"] + tlsFlags + extra,
                                 log: "s3-\(port)")
        others.append(process)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let response = try? HTTP.send("GET", "\(scheme)://127.0.0.1:\(port)/_health"), response.status == 200 { return port }
            usleep(20_000)
        }
        throw ClusterError("gateway on \(port) did not start; logs:\n\(logText())")
    }

    func shutdown() {
        for process in [master] + volumes.values.map({ Optional($0) }) + others.map({ Optional($0) }) { kill9(process) }
        try? FileManager.default.removeItem(atPath: root)
    }
}

struct ClusterError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Plain HTTP for tests, on the project's own client (one connection per call).
enum HTTP {
    struct Answer {
        let status: Int
        let headers: HTTPHeaders
        let body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    static func send(_ method: String, _ url: String, body: [UInt8] = [], headers: [(String, String)] = [],
                     timeout: Double = 10) throws -> Answer {
        guard let parsed = HTTPURL(url) else { throw ClusterError("bad URL \(url)") }
        let client = HTTPClient(timeout: timeout, maxIdlePerHost: 0)
        let response = try client.send(method, parsed, headers: HTTPHeaders(headers), body: body)
        return Answer(status: response.status, headers: response.headers, body: response.body)
    }

    /// Sends to the master and follows one redirect, as `curl -L` does (or up to `redirects`).
    static func follow(_ method: String, _ url: String, body: [UInt8] = [], headers: [(String, String)] = [],
                       redirects: Int = 1) throws -> Answer {
        var answer = try send(method, url, body: body, headers: headers)
        for _ in 0..<redirects {
            guard [301, 302, 303, 307, 308].contains(answer.status), let location = answer.headers["Location"] else { break }
            answer = try send(method, location, body: body, headers: headers)
        }
        return answer
    }
}

/// What a client does with values, through the master: the test classes' `put` and `get`.
extension TestCluster {
    /// Writes `value` under `key` (the path after `/store/`, as sent), following the redirect.
    func put(_ key: String, _ value: [UInt8], headers: [(String, String)] = []) throws -> HTTP.Answer {
        try HTTP.follow("PUT", masterURL + "/store/" + key, body: value, headers: headers)
    }

    func put(_ key: String, _ value: String, headers: [(String, String)] = []) throws -> HTTP.Answer {
        try put(key, Array(value.utf8), headers: headers)
    }

    /// Reads `key`, following the redirect; or up to `redirects` of them, for tests where a
    /// volume may send the reader back to the master.
    func get(_ key: String, headers: [(String, String)] = [], redirects: Int = 1) throws -> HTTP.Answer {
        try HTTP.follow("GET", masterURL + "/store/" + key, headers: headers, redirects: redirects)
    }
}

/// Checks `condition` every 50 ms until it holds, or throws after `timeout` seconds.
func waitUntil(_ what: String, timeout: Double = 10, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return }
        usleep(50_000)
    }
    throw ClusterError("timed out waiting for: \(what)")
}

/// Runs a command-line tool (curl) and returns its exit status and output.
func runTool(_ tool: String, _ arguments: [String], stdin: Data? = nil) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [tool] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    if let stdin {
        let input = Pipe()
        process.standardInput = input
        try process.run()
        input.fileHandleForWriting.write(stdin)
        input.fileHandleForWriting.closeFile()
    } else {
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// A tool the test drives (`tool arguments` must exit 0): skipped when missing on a
/// workstation, a failure in CI (see `require`).
func requireTool(_ tool: String, _ arguments: [String]) throws {
    try require((try? runTool(tool, arguments))?.status == 0, "\(tool) is needed (scripts/install-deps --test installs it)")
}
