import Foundation
import KalavaraSupport

/// Where a body's bytes are pulled from, one read at a time: `MessageBody` off a socket, or
/// in a test a list of pieces, so that a decoder above it (the S3 gateway's aws-chunked
/// framing) can be fed every way the network may cut the same bytes into reads.
public protocol ByteSource: AnyObject {
    /// Up to `buffer.count` bytes; 0 only at the end.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A message body read as a stream: `Content-Length`, `chunked`, or until close.
///
/// Handlers pull bytes with `read(into:)`, so a 1 GiB upload never sits in memory; the
/// same reader decodes request bodies on the server and response bodies in the client.
/// A body that ends early throws `ConnectionError.closedByPeer`: the caller must treat
/// what it received as incomplete (the volume deletes its temporary file).
public final class MessageBody: ByteSource {
    fileprivate enum State {
        case remaining(Int)
        case chunkSize
        case chunkData(Int)
        case chunkEnd
        case trailers(Int)
        case untilClose
        case done
    }

    private let socket: BufferedSocket
    private var state: State
    /// Runs once before the first read: the server sends `100 Continue` from here.
    private var beforeFirstRead: (() throws -> Void)?
    private(set) var bytesRead = 0
    /// Server side: the rate (bytes/s) below which a body is dropped once it has been
    /// arriving for `rateGrace` seconds (0: no floor). A body trickled a byte at a time
    /// would otherwise hold a thread, a slot and a temporary file on every replica forever.
    var rateFloor: Double = 0
    /// What `rateFloor` is measured on: the server's clock (`HTTPServer.Configuration.clock`).
    var clock: any ServerClock = MonotonicClock()
    static let rateGrace = 10.0
    private var firstReadAt: Double?

    init(socket: BufferedSocket, framing: BodyFraming, beforeFirstRead: (() throws -> Void)? = nil) {
        self.socket = socket
        switch framing {
        case .none, .length(0): state = .done
        case .length(let count): state = .remaining(count)
        case .chunked: state = .chunkSize
        case .untilClose: state = .untilClose
        }
        self.beforeFirstRead = state.isDone ? nil : beforeFirstRead
    }

    /// True once the whole body (and any trailers) has been received.
    var isComplete: Bool { state.isDone }

    /// The bytes still to come when the length is known in advance.
    public var knownRemaining: Int? {
        if case .remaining(let count) = state { return count }
        return state.isDone ? 0 : nil
    }

    /// Reads up to `buffer.count` body bytes; returns 0 only at the end of the body.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if let hook = beforeFirstRead {
            beforeFirstRead = nil
            try hook()
        }
        if rateFloor > 0 { try checkRate() }
        while true {
            switch state {
            case .done:
                return 0
            case .remaining(let left):
                let count = try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer.prefix(left)))
                guard count > 0 else { throw ConnectionError.closedByPeer }
                state = left == count ? .done : .remaining(left - count)
                bytesRead += count
                return count
            case .untilClose:
                let count = try socket.read(into: buffer)
                if count == 0 { state = .done }
                bytesRead += count
                return count
            case .chunkSize:
                let line = try readLine(limit: HTTPLimits.maxChunkLineBytes, what: "chunk size line")
                let size = try Self.parseChunkSize(line)
                state = size == 0 ? .trailers(0) : .chunkData(size)
            case .chunkData(let left):
                let count = try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer.prefix(left)))
                guard count > 0 else { throw ConnectionError.closedByPeer }
                state = left == count ? .chunkEnd : .chunkData(left - count)
                bytesRead += count
                return count
            case .chunkEnd:
                let line = try readLine(limit: 2, what: "chunk end")
                guard line.isEmpty else { throw HTTPError.malformed("chunk data longer than its size") }
                state = .chunkSize
            case .trailers(let seen):
                // Trailer fields are tolerated and ignored (RFC 9112 §7.1.2).
                let line = try readLine(limit: HTTPLimits.maxTrailerBytes - seen, what: "trailer section")
                state = line.isEmpty ? .done : .trailers(seen + line.count + 2)
            }
        }
    }

    /// For a chunked body the client sends without waiting for `100 Continue`: whether it
    /// is empty, from its first chunk-size line, waiting up to `seconds` for that line to
    /// arrive. Nil when it cannot tell (another framing, the client waits for 100, the
    /// line is late). Consumes nothing.
    public func peekChunkedIsEmpty(waiting seconds: Double) -> Bool? {
        guard case .chunkSize = state, beforeFirstRead == nil, bytesRead == 0 else { return nil }
        let deadline = monotonicSeconds() + seconds
        while true {
            let bytes = socket.buffered
            if let end = bytes.firstIndex(of: ASCII.lf) {
                var line = Array(bytes[0..<end])
                if line.last == ASCII.cr { line.removeLast() }
                return (try? Self.parseChunkSize(line)).map { $0 == 0 }
            }
            let left = deadline - monotonicSeconds()
            guard left > 0, bytes.count < HTTPLimits.maxChunkLineBytes else { return nil }
            guard socket.awaitInput(seconds: max(0.001, left)), (try? socket.fill()) == true else { return nil }
        }
    }

    private func checkRate() throws {
        let now = clock.now()
        guard let start = firstReadAt else {
            firstReadAt = now
            return
        }
        let elapsed = now - start
        if elapsed > Self.rateGrace, Double(bytesRead) < rateFloor * elapsed { throw ConnectionError.timedOut }
    }

    /// Reads the whole body into memory; bodies over `limit` bytes are refused with 413.
    public func readAll(limit: Int) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = try chunk.withUnsafeMutableBytes { try read(into: $0) }
            if count == 0 { return result }
            guard result.count + count <= limit else {
                throw HTTPError(413, "body larger than \(limit) bytes", closesConnection: true)
            }
            result.append(contentsOf: chunk[0..<count])
        }
    }

    /// Reads and discards the rest of the body if at most `limit` bytes remain, so the
    /// connection can carry the next request. Returns false if the connection must close.
    public func discardRemaining(limit: Int) -> Bool {
        if isComplete { return true }
        if beforeFirstRead != nil { return false } // the client still waits for 100 Continue
        if let known = knownRemaining, known > limit { return false }
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        var discarded = 0
        do {
            while discarded <= limit {
                let count = try scratch.withUnsafeMutableBytes { try read(into: $0) }
                if count == 0 { return true }
                discarded += count
            }
        } catch {
            return false
        }
        return false
    }

    /// One CRLF- or LF-terminated line from the socket, without its ending.
    private func readLine(limit: Int, what: String) throws -> [UInt8] {
        var scanned = 0
        while true {
            let bytes = socket.buffered
            while scanned < bytes.count, bytes[scanned] != ASCII.lf { scanned += 1 }
            if scanned < bytes.count {
                // The limit holds however the line arrived: in pieces or in one read.
                guard scanned <= limit else { throw HTTPError.malformed("\(what) too long") }
                var end = scanned
                if end > 0, bytes[end - 1] == ASCII.cr { end -= 1 }
                let line = Array(bytes[0..<end])
                socket.consume(scanned + 1)
                return line
            }
            guard bytes.count <= limit else { throw HTTPError.malformed("\(what) too long") }
            guard try socket.fill() else { throw ConnectionError.closedByPeer }
        }
    }

    /// chunk-size [ BWS ";" chunk-ext ]: hex digits, then nothing, or optional whitespace
    /// and a ";" starting extensions (ignored).
    static func parseChunkSize(_ line: [UInt8]) throws -> Int {
        var size = 0
        var index = 0
        while index < line.count, let value = ASCII.hexValue(line[index]) {
            guard index < 15 else { throw HTTPError.malformed("chunk size too large") }
            size = size << 4 | Int(value)
            index += 1
        }
        guard index > 0 else { throw HTTPError.malformed("missing chunk size") }
        while index < line.count, line[index] == ASCII.space || line[index] == ASCII.tab { index += 1 }
        guard index == line.count || line[index] == ASCII.semicolon else { throw HTTPError.malformed("bad chunk size") }
        return size
    }
}

private extension MessageBody.State {
    var isDone: Bool { if case .done = self { return true } else { return false } }
}
