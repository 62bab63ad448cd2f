import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport

/// N clients doing PUT → GET → DELETE cycles on distinct keys through the master,
/// following redirects as a client would, checking every answer. Like minikeyvalue's
/// thrasher; prints cycles per second and each operation's latency percentiles.
///
/// With `-o put`, clients only PUT, to keys `PREFIX0`, `PREFIX1`, ... (numbered across all
/// clients, at most `-n`), and keep them: a write benchmark that also fills the index.
enum Cycles {
    static func run(master: HTTPURL, clients: Int, seconds: Double, size: Int, prefix: String) throws {

        let totals = Totals()
        let deadline = monotonicSeconds() + seconds
        let group = DispatchGroup()
        let start = monotonicSeconds()
        for client in 0..<clients {
            let thread = Thread {
                var local = (put: Latencies(), get: Latencies(), delete: Latencies())
                var done = 0
                var problems: [String] = []
                let http = HTTPClient(timeout: 30, maxIdlePerHost: 2)
                let value = (0..<size).map { UInt8(truncatingIfNeeded: $0 &+ client) }
                while monotonicSeconds() < deadline, problems.count < 5 {
                    let path = "/store/\(prefix)/\(client)/\(done)"
                    do {
                        var t = monotonicSeconds()
                        try expect(follow(http, "PUT", master, path, body: value), 201, "PUT")
                        local.put.add((monotonicSeconds() - t) * 1e6)
                        t = monotonicSeconds()
                        let answer = try follow(http, "GET", master, path)
                        try expect(answer, 200, "GET")
                        guard answer.body == value else { throw LoadError("GET returned other bytes") }
                        local.get.add((monotonicSeconds() - t) * 1e6)
                        t = monotonicSeconds()
                        try expect(follow(http, "DELETE", master, path), 204, "DELETE")
                        local.delete.add((monotonicSeconds() - t) * 1e6)
                        done += 1
                    } catch {
                        problems.append("\(error)")
                    }
                }
                totals.add(local, cycles: done, failures: problems)
                group.leave()
            }
            group.enter()
            thread.start()
        }
        group.wait()
        let elapsed = monotonicSeconds() - start
        print(String(format: "cycles: %d in %.1f s = %.0f cycles/s (%d clients, %d-byte values)",
                     totals.cycles, elapsed, Double(totals.cycles) / elapsed, clients, size))
        print("PUT     \(totals.put.summary)")
        print("GET     \(totals.get.summary)")
        print("DELETE  \(totals.delete.summary)")
        if !totals.failures.isEmpty {
            print("failures: \(totals.failures.count), first: \(totals.failures[0])")
            exit(1)
        }
    }

    static func putOnly(master: HTTPURL, clients: Int, seconds: Double, size: Int, limit: Int, prefix: String) throws {
        let numbers = Counter()
        let totals = Totals()
        let deadline = monotonicSeconds() + seconds
        let group = DispatchGroup()
        let start = monotonicSeconds()
        for _ in 0..<clients {
            group.enter()
            Thread {
                var latencies = Latencies()
                var done = 0
                var problems: [String] = []
                let http = HTTPClient(timeout: 30, maxIdlePerHost: 2)
                let value = [UInt8](repeating: 0x6b, count: size)
                while monotonicSeconds() < deadline, problems.count < 5 {
                    let number = numbers.next()
                    guard number < limit else { break }
                    let t = monotonicSeconds()
                    do {
                        try expect(follow(http, "PUT", master, "/store/\(prefix)\(number)", body: value), 201, "PUT")
                        latencies.add((monotonicSeconds() - t) * 1e6)
                        done += 1
                    } catch {
                        problems.append("\(error)")
                    }
                }
                totals.add((latencies, Latencies(), Latencies()), cycles: done, failures: problems)
                group.leave()
            }.start()
        }
        group.wait()
        let elapsed = monotonicSeconds() - start
        print(String(format: "puts: %d in %.1f s = %.0f PUT/s (%d clients, %d-byte values)  ",
                     totals.cycles, elapsed, Double(totals.cycles) / elapsed, clients, size) + totals.put.summary)
        if !totals.failures.isEmpty {
            print("failures: \(totals.failures.count), first: \(totals.failures[0])")
            exit(1)
        }
    }

    /// What all clients measured, gathered under a lock as each client finishes.
    final class Totals: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var put = Latencies(), get = Latencies(), delete = Latencies()
        private(set) var cycles = 0
        private(set) var failures: [String] = []

        func add(_ local: (put: Latencies, get: Latencies, delete: Latencies), cycles done: Int, failures problems: [String]) {
            lock.lock()
            put.merge(local.put)
            get.merge(local.get)
            delete.merge(local.delete)
            cycles += done
            failures += problems
            lock.unlock()
        }
    }

    /// One request to the master and, for a redirect, the same request to its Location.
    static func follow(_ http: HTTPClient, _ method: String, _ master: HTTPURL, _ path: String,
                       body: [UInt8] = []) throws -> ClientResponse {
        let first = try http.send(method, HTTPURL("http://\(master.authority)\(path)")!, body: method == "PUT" ? [] : body)
        guard first.status == 302 || first.status == 307, let location = first.headers["Location"].flatMap(HTTPURL.init) else {
            return first
        }
        return try http.send(method, location, body: body)
    }

    static func expect(_ answer: ClientResponse, _ status: Int, _ what: String) throws {
        guard answer.status == status else {
            throw LoadError("\(what) answered \(answer.status): \(answer.text.prefix(100))")
        }
    }
}
