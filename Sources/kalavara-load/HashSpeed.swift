import ArgumentParser
import Foundation
import KalavaraCore
import KalavaraSupport

/// How fast the digests Kalavara uses run here (libcrypto and zlib through
/// `KalavaraSupport/Digests.swift`): the figures in docs/development.md.
struct HashCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash", abstract: "Speed of SHA-256, HMAC-SHA256, MD5 and CRC-32 as the store calls them.")

    func run() {
        let big = [UInt8](repeating: 0x5A, count: 64 << 20)
        let kib = [UInt8](repeating: 1, count: 1024)
        let key = Array("some/key/of-about-sixty-four-bytes/that-names-a-value-file/0001".utf8)
        func throughput(_ name: String, _ body: () -> Void) {
            var best = Double.infinity
            for _ in 0..<3 {
                let start = monotonicSeconds()
                body()
                best = min(best, monotonicSeconds() - start)
            }
            print(name.padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: "%8.0f MB/s", Double(big.count) / best / 1e6))
        }
        func perCall(_ name: String, _ count: Int, _ body: () -> Void) {
            let start = monotonicSeconds()
            for _ in 0..<count { body() }
            print(name.padding(toLength: 28, withPad: " ", startingAt: 0)
                  + String(format: "%8.0f ns", (monotonicSeconds() - start) / Double(count) * 1e9))
        }
        throughput("SHA-256, 64 MiB") { _ = SHA256.digest(big) }
        throughput("MD5, 64 MiB") { _ = MD5.digest(big) }
        throughput("CRC-32, 64 MiB") { _ = CRC32.checksum(big) }
        perCall("SHA-256 of a 64-byte key", 1_000_000) { _ = SHA256.digest(key) }
        perCall("SHA-256 hex of the key", 1_000_000) { _ = SHA256.hex(key) }
        perCall("SHA-256 of 1 KiB", 200_000) { _ = SHA256.digest(kib) }
        perCall("HMAC-SHA256 of 1 KiB", 200_000) { _ = HMACSHA256.authenticationCode(key: key, message: kib) }
    }
}
