import ArgumentParser
import Foundation
import KalavaraCore
import KalavaraHTTP

/// `kalavara`: the operator's command line. Every subcommand talks to the master's HTTP
/// API (and, for values, follows its redirects to the volumes), as any client does.
struct AdminCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kalavara",
        abstract: "Operate a Kalavara cluster: look at it, move values in and out, drive healing.",
        discussion: "The master is -m URL, else $KALAVARA_MASTER, else http://127.0.0.1:6000. Credentials (when the "
            + "master asks for them) are --user NAME:SECRET or $KALAVARA_USER. An https:// cluster's CA is --tls-ca PATH "
            + "or $KALAVARA_TLS_CA. Errors are one line on standard error, exit 2.",
        version: Kalavara.version,
        subcommands: [Status.self, Masters.self, Volumes.self, List.self, Put.self, Get.self, Remove.self, AddVolume.self,
                      RemoveVolume.self, Repair.self, Rebuild.self, Scrub.self])
}

struct ConnectionOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .customLong("master")], help: ArgumentHelp("The master's URL (a group's: any, or several comma-separated).", valueName: "url"))
    var master: String?

    @Option(name: .customLong("user"), help: ArgumentHelp("Credentials, NAME:SECRET.", valueName: "name:secret"))
    var user: String?

    /// Without it, `KALAVARA_TLS_CA`, else the system's trust store.
    @Option(name: .customLong("tls-ca"), help: ArgumentHelp("CA certificates (PEM) to verify https:// daemons against.", valueName: "path"))
    var tlsAuthority: String?

    func connect() throws -> MasterConnection { try MasterConnection(master: master, user: user, tlsAuthority: tlsAuthority) }
}

struct WaitOptions: ParsableArguments {
    @Flag(name: .customLong("wait"), help: "Wait until it is done, with a progress bar on a terminal.")
    var wait = false

    @Option(name: .customLong("timeout"), help: ArgumentHelp("Give up waiting after this long.", valueName: "seconds"))
    var timeout = 86_400.0

    /// Polls the master's status until `step` says done, drawing its progress; returns the
    /// last status seen.
    func watch(_ label: String, _ master: MasterConnection,
               _ step: (ClusterStatus) -> (done: Bool, value: Int, total: Int?)) throws -> ClusterStatus {
        let progress = ProgressBar(label, total: nil, unit: .items)
        var last: ClusterStatus?
        try poll(timeout: timeout) {
            let status = try master.json(ClusterStatus.self, "/admin/status")
            last = status
            let (done, value, total) = step(status)
            progress.update(value, total: total)
            return done
        }
        progress.finish()
        return last!
    }
}

// MARK: - Looking at the cluster

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The cluster at a glance.")
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        let status = try connection.connect().json(ClusterStatus.self, "/admin/status")
        let up = status.volumes.filter { $0.state == "up" }.count
        print("master \(status.master) (v\(status.version), \(status.signed ? "signed" : "open"), replicas \(status.replicas))")
        print("index: about \(StatusPage.formatCount(status.indexKeys)) keys, \(StatusPage.formatBytes(status.indexDiskFreeBytes)) free")
        if let group = status.group, !group.group.isEmpty {
            let standbys = group.masters.filter { $0.role == "standby" }
            print("group \(group.group): " + (group.leader.map { "leader \($0)" } ?? "NO LEADER") + ", epoch \(group.epoch), "
                  + "\(standbys.filter(\.inSync).count) of \(standbys.count) standby(s) in sync")
        }
        print("volumes: \(up) of \(status.volumes.count) up, in \(status.zoneCount) zone(s)"
              + (status.zoneCount < status.replicas ? ": FEWER ZONES THAN REPLICAS, some keys have two copies in one zone" : ""))
        printVolumes(status.volumes)
        if status.repair.running {
            print("repair: running, \(StatusPage.formatCount(status.repair.scanned)) keys examined, "
                  + "\(status.repair.underReplicated) short of copies, \(status.repair.copied) copies made")
        } else {
            print("repair: idle, \(status.repair.passes) pass(es), \(status.repair.copied) copies made")
        }
        if status.rebuild.running {
            print("rebuild: running, \(status.rebuild.volumesDone) of \(status.rebuild.volumesTotal) volumes read")
        }
        for event in status.recentEvents.prefix(5) { print("recent \(event.level): \(event.message)") }
    }
}

func printVolumes(_ volumes: [ClusterStatus.Volume]) {
    let width = max(6, volumes.map(\.url.count).max() ?? 0)
    let zoneWidth = max(4, volumes.map { ($0.zone ?? Placement.defaultZone).count }.max() ?? 0)
    print("VOLUME".padding(toLength: width, withPad: " ", startingAt: 0) + "  " + "ZONE".padding(toLength: zoneWidth, withPad: " ", startingAt: 0)
          + "  STATE     KEYS        FREE        USED")
    for volume in volumes {
        let keys = volume.keys.map(StatusPage.formatCount) ?? "-"
        let free = volume.freeBytes.map(StatusPage.formatBytes) ?? "-"
        let used = volume.usedFraction.map { String(format: "%.0f%%", $0 * 100) } ?? "-"
        print(volume.url.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
              + (volume.zone ?? Placement.defaultZone).padding(toLength: zoneWidth, withPad: " ", startingAt: 0) + "  "
              + volume.state.padding(toLength: 8, withPad: " ", startingAt: 0) + "  "
              + keys.padding(toLength: 10, withPad: " ", startingAt: 0) + "  "
              + free.padding(toLength: 10, withPad: " ", startingAt: 0) + "  " + used)
    }
}

struct Masters: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The master group: who leads, and each standby's place.")
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        let group = try connection.connect().json(ClusterStatus.Group.self, "/admin/masters")
        print(group.group.isEmpty ? "a single master (no --etcd)" : "group \(group.group), epoch \(group.epoch)"
              + (group.leader == nil ? ", NO LEADER: writes wait for one" : ""))
        let width = max(6, group.masters.map(\.url.count).max() ?? 0)
        print("MASTER".padding(toLength: width, withPad: " ", startingAt: 0) + "  ROLE      IN SYNC  LAG")
        for member in group.masters {
            print(member.url.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                  + member.role.padding(toLength: 8, withPad: " ", startingAt: 0) + "  "
                  + (member.inSync ? "yes" : "no").padding(toLength: 7, withPad: " ", startingAt: 0) + "  \(member.lagMs) ms")
        }
    }
}

struct Volumes: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The volumes: zone, state, keys, free space.")
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        printVolumes(try connection.connect().json(ClusterStatus.self, "/admin/status").volumes)
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "Keys, in byte order, one per line.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Only keys starting with this.") var prefix = ""

    struct Page: Decodable {
        let keys: [String]
        let next: String?
    }

    func run() throws {
        let master = try connection.connect()
        var after: String?
        repeat {
            var query = QueryParameters()
            query.add("prefix", prefix)
            query.add("limit", "10000")
            if let after { query.add("after", after) }
            let page = try master.json(Page.self, "/store/?" + query.encoded)
            for key in page.keys { print(key) }
            after = page.next
        } while after != nil
    }
}

// MARK: - Values

struct Put: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Store a file (- for standard input) under a key.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The file.") var file: String
    @Argument(help: "The key.") var key: String

    func run() throws {
        let master = try connection.connect()
        let key = try parsedKey(key)
        let fd = file == "-" ? 0 : open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure("cannot open \(file): \(String(cString: strerror(errno)))") }
        defer { if fd != 0 { close(fd) } }
        var info = stat()
        let size: Int? = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? Int(info.st_size) : nil
        let location = try master.redirect("PUT", key: key)
        let upload: StreamingUpload
        do {
            upload = try master.client.startUpload("PUT", location, contentLength: size)
        } catch {
            throw Failure("cannot reach the volume \(location.authority): \(error)")
        }
        let progress = ProgressBar("put \(key)", total: size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var sent = 0
        while true {
            let count = read(fd, buffer.baseAddress, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else {
                upload.abandon()
                throw Failure("reading \(file): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            upload.write(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            sent += count
            progress.update(sent)
        }
        let answer: ClientResponse
        do {
            answer = try upload.finish()
        } catch {
            throw Failure("PUT \(key): the volume did not answer: \(error)")
        }
        guard answer.status == 201 else { throw MasterConnection.refusal("PUT", "/store/\(key)", answer.status, answer.text) }
        progress.finish()
        print("stored \(key): \(StatusPage.formatBytes(sent)), version \(answer.headers["ETag"] ?? "?")")
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a key's value to a file, or to standard output.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The key.") var key: String
    @Argument(help: "The file (default: standard output).") var file: String?

    func run() throws {
        let master = try connection.connect()
        let key = try parsedKey(key)
        let location = try master.redirect("GET", key: key)
        let output = file.map { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) } ?? 1
        guard output >= 0 else { throw Failure("cannot write \(file!): \(String(cString: strerror(errno)))") }
        var progress: ProgressBar?
        var received = 0
        do {
            defer { if output != 1 { close(output) } }
            // A bar on a terminal's standard error, unless the value itself goes to that terminal.
            let showBar = isatty(2) == 1 && (output != 1 || isatty(1) == 0)
            let answer = try master.client.download("GET", location, onHead: { _, headers in
                progress = ProgressBar("get \(key)", total: headers["Content-Length"].flatMap { Int($0) }, enabled: showBar)
            }, sink: { piece in
                var offset = 0
                while offset < piece.count {
                    let written = write(output, piece.baseAddress!.advanced(by: offset), piece.count - offset)
                    if written < 0, errno == EINTR { continue }
                    guard written > 0 else { throw Failure("writing \(file ?? "standard output"): \(String(cString: strerror(errno)))") }
                    offset += written
                }
                received += piece.count
                progress?.update(received)
            })
            guard (200..<300).contains(answer.status) else {
                throw MasterConnection.refusal("GET", "/store/\(key)", answer.status, String(decoding: answer.errorBody, as: UTF8.self))
            }
        } catch let failure as Failure {
            if let file { unlink(file) }
            throw failure
        } catch {
            if let file { unlink(file) }
            throw Failure("GET \(key): \(error)")
        }
        progress?.finish()
    }
}

struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a key.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The key.") var key: String

    func run() throws {
        let master = try connection.connect()
        let key = try parsedKey(key)
        try master.call("DELETE", try master.redirect("DELETE", key: key), expect: [204])
        print("deleted \(key)")
    }
}

func parsedKey(_ text: String) throws -> Key {
    do {
        return try Key(text)
    } catch {
        throw Failure("not a valid key: \(error)")
    }
}

// MARK: - Volumes and healing

struct AddVolume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Add a volume (or bring back a removed one).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The volume's base URL.") var url: String

    func run() throws {
        let answer = try connection.connect().send("POST", "/admin/add-volume", body: Array(url.utf8))
        print(answer.text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

struct RemoveVolume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Drain a volume: its keys move elsewhere, then it leaves.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var waiting: WaitOptions
    @Argument(help: "The volume's base URL.") var url: String

    func run() throws {
        let master = try connection.connect()
        guard let normalized = VolumeRegistry.normalize(url) else { throw Failure("not a volume URL (want http://host:port): \(url)") }
        try master.send("POST", "/admin/remove-volume", body: Array(normalized.utf8), expect: [202])
        guard waiting.wait else { return print("draining \(normalized)") }
        let start = try master.json(ClusterStatus.self, "/admin/status").volumes.first { $0.url == normalized }?.keys ?? 0
        _ = try waiting.watch("draining \(normalized)", master) { status in
            guard let volume = status.volumes.first(where: { $0.url == normalized }) else { return (true, start, start) }
            return (false, max(0, start - (volume.keys ?? start)), start)
        }
        print("removed \(normalized)")
    }
}

struct Repair: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a placement pass (repair, rebalance, drain).")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var waiting: WaitOptions

    func run() throws {
        let master = try connection.connect()
        let before = try master.json(ClusterStatus.self, "/admin/status").repair.passes
        try master.send("POST", "/admin/repair", expect: [202])
        guard waiting.wait else { return print("repair pass requested") }
        let repair = try waiting.watch("repair", master) { status in
            (status.repair.passes > before && !status.repair.running, status.repair.scanned, max(status.indexKeys, status.repair.scanned))
        }.repair
        print("repair pass done: \(repair.scanned) keys examined, \(repair.underReplicated) short of copies, "
              + "\(repair.misplaced) misplaced, \(repair.copied) copies made in all, \(repair.errors) errors")
    }
}

struct Rebuild: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rebuild the index from the volumes' files.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var waiting: WaitOptions

    func run() throws {
        let master = try connection.connect()
        let answer = try master.send("POST", "/admin/rebuild", expect: [202])
        guard waiting.wait else { return print(answer.text.trimmingCharacters(in: .whitespacesAndNewlines)) }
        let rebuild = try waiting.watch("rebuild", master) { status in
            (!status.rebuild.running, status.rebuild.volumesDone, status.rebuild.volumesTotal)
        }.rebuild
        print("rebuild done: \(rebuild.keysFound) keys found on \(rebuild.volumesTotal) volumes")
    }
}

struct Scrub: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read and check every value file on every live volume.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var waiting: WaitOptions

    struct VolumeScrub: Decodable {
        let running: Bool
        let checked: Int
        let corrupt: Int
        let passes: Int
    }

    func run() throws {
        let master = try connection.connect()
        let volumes = try master.json(ClusterStatus.self, "/admin/status").volumes.filter { $0.state == "up" || $0.state == "draining" }
        guard !volumes.isEmpty else { throw Failure("no live volume to scrub") }
        func scrubURL(_ volume: ClusterStatus.Volume) throws -> HTTPURL {
            guard let url = HTTPURL(volume.url + "/admin/scrub") else { throw Failure("bad volume URL \(volume.url)") }
            return url
        }
        func scrub(_ volume: ClusterStatus.Volume) throws -> VolumeScrub {
            try MasterConnection.decode(VolumeScrub.self, try master.call("GET", try scrubURL(volume), expect: [200]),
                                        what: "\(volume.url)/admin/scrub")
        }
        let before = try volumes.map { try scrub($0).passes }
        // Through the master: a volume starts a pass only for the cluster's signature.
        try master.send("POST", "/admin/scrub", expect: [202])
        guard waiting.wait else { return print("scrub started on \(volumes.count) volume(s)") }
        let total = volumes.reduce(0) { $0 + ($1.keys ?? 0) }
        let progress = ProgressBar("scrub", total: total, unit: .items)
        var states: [VolumeScrub] = []
        try poll(timeout: waiting.timeout) {
            states = try volumes.map(scrub)
            progress.update(states.reduce(0) { $0 + $1.checked })
            return zip(states, before).allSatisfy { $0.passes > $1 && !$0.running }
        }
        progress.finish()
        print("scrub done on \(volumes.count) volume(s): \(states.reduce(0) { $0 + $1.checked }) files checked, "
              + "\(states.reduce(0) { $0 + $1.corrupt }) corrupt found since their start")
    }
}

// MARK: - Entry

/// `-m URL` and `--user N:S` may come before the subcommand too (`kalavara -m URL status`):
/// they are moved after it, where each subcommand declares them.
func arguments(_ raw: [String]) throws -> [String] {
    var leading: [String] = []
    var rest = raw[...]
    while let first = rest.first, ["-m", "--master", "--user"].contains(first), rest.count >= 2 {
        leading += rest.prefix(2)
        rest = rest.dropFirst(2)
    }
    let names = AdminCommand.configuration.subcommands.map { $0._commandName }
    if let first = rest.first, !first.hasPrefix("-"), !names.contains(first) {
        throw Failure("unknown command '\(first)' (see --help)")
    }
    guard let subcommand = rest.first, !leading.isEmpty else { return raw }
    return [subcommand] + leading + rest.dropFirst()
}

do {
    var command = try AdminCommand.parseAsRoot(try arguments(Array(CommandLine.arguments.dropFirst())))
    try command.run()
} catch let failure as Failure {
    FileHandle.standardError.write(Data("kalavara: \(failure)\n".utf8))
    exit(2)
} catch {
    if AdminCommand.exitCode(for: error) == .success { AdminCommand.exit(withError: error) }
    FileHandle.standardError.write(Data("kalavara: \(Daemon.usageMessage(AdminCommand.message(for: error)))\n".utf8))
    exit(2)
}
