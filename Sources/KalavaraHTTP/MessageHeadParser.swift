import KalavaraSupport
/// Parses the head of an HTTP/1.x message: the start line and the header fields.
///
/// One parser serves the server (requests) and the client (responses), so both sides apply
/// the same rules. It is strict where leniency enables request smuggling or cache poisoning
/// (RFC 9112 §2.2, §5): no whitespace before a header's colon, no obsolete line folding,
/// no control characters in values. It accepts a bare LF as a line end, which RFC 9112 §2.2
/// allows a recipient to do. It works on a borrowed buffer and copies only the pieces it
/// keeps (method, target, names, values).
enum MessageHeadParser {
    /// The length of the head at the start of `bytes`, counting its blank last line, or nil
    /// while the blank line has not arrived. `from` lets a caller resume a scan.
    static func headLength(in bytes: UnsafeBufferPointer<UInt8>, from: Int = 0) -> Int? {
        var index = max(0, from - 3)
        let count = bytes.count
        while index < count {
            guard bytes[index] == ASCII.lf else { index += 1; continue }
            // A line just ended at `index`; the head ends if the next line is empty.
            if index + 1 < count, bytes[index + 1] == ASCII.lf { return index + 2 }
            if index + 2 < count, bytes[index + 1] == ASCII.cr, bytes[index + 2] == ASCII.lf {
                return index + 3
            }
            index += 1
        }
        return nil
    }

    /// Parses a complete request head (as delimited by `headLength`).
    static func parseRequest(_ head: UnsafeBufferPointer<UInt8>) throws -> HTTPRequest {
        var lines = LineIterator(head)
        guard let requestLine = lines.next(), !requestLine.isEmpty else {
            throw HTTPError.malformed("empty request line")
        }
        let (method, target, minor) = try parseRequestLine(head, requestLine)
        let headers = try parseHeaderLines(head, &lines)
        return try HTTPRequest(method: method, target: target, minorVersion: minor, headers: headers)
    }

    /// Parses a complete response head: status code, reason phrase ignored.
    static func parseResponse(_ head: UnsafeBufferPointer<UInt8>) throws -> (status: Int, headers: HTTPHeaders) {
        var lines = LineIterator(head)
        guard let statusLine = lines.next(), statusLine.count >= 12 else {
            throw HTTPError.malformed("short status line")
        }
        let s = statusLine.lowerBound
        guard matches(head, at: s, "HTTP/1."), head[s + 8] == ASCII.space else {
            throw HTTPError.malformed("bad status line")
        }
        var status = 0
        for i in 9..<12 {
            let digit = head[s + i]
            guard digit >= ASCII.zero, digit <= ASCII.nine else { throw HTTPError.malformed("bad status code") }
            status = status * 10 + Int(digit - ASCII.zero)
        }
        guard status >= 100 else { throw HTTPError.malformed("bad status code") }
        return (status, try parseHeaderLines(head, &lines))
    }

    // MARK: - Pieces

    private static func parseRequestLine(_ head: UnsafeBufferPointer<UInt8>,
                                         _ line: Range<Int>) throws -> (String, String, Int) {
        // method SP request-target SP HTTP-version, single spaces (RFC 9112 §3).
        var firstSpace = line.lowerBound
        while firstSpace < line.upperBound, head[firstSpace] != ASCII.space {
            guard ASCII.isTokenByte(head[firstSpace]) else { throw HTTPError.malformed("bad method") }
            firstSpace += 1
        }
        guard firstSpace > line.lowerBound, firstSpace < line.upperBound else {
            throw HTTPError.malformed("bad request line")
        }
        var secondSpace = firstSpace + 1
        while secondSpace < line.upperBound, head[secondSpace] != ASCII.space {
            let byte = head[secondSpace]
            guard byte > ASCII.space, byte != ASCII.del else {
                throw HTTPError.malformed("bad character in request target")
            }
            secondSpace += 1
        }
        guard secondSpace > firstSpace + 1, secondSpace < line.upperBound else {
            throw HTTPError.malformed("bad request line")
        }
        let versionStart = secondSpace + 1
        guard line.upperBound - versionStart == 8, matches(head, at: versionStart, "HTTP/") ,
              head[versionStart + 6] == ASCII.dot else {
            throw HTTPError.malformed("bad HTTP version")
        }
        let major = head[versionStart + 5], minor = head[versionStart + 7]
        guard (ASCII.zero...ASCII.nine).contains(major), (ASCII.zero...ASCII.nine).contains(minor) else {
            throw HTTPError.malformed("bad HTTP version")
        }
        guard major == ASCII.one, minor <= ASCII.one else {
            throw HTTPError(505, "only HTTP/1.0 and HTTP/1.1 are served", closesConnection: true)
        }
        let method = string(head, line.lowerBound..<firstSpace)
        let target = string(head, (firstSpace + 1)..<secondSpace)
        return (method, target, Int(minor - ASCII.zero))
    }

    private static func parseHeaderLines(_ head: UnsafeBufferPointer<UInt8>,
                                         _ lines: inout LineIterator) throws -> HTTPHeaders {
        var headers = HTTPHeaders()
        var count = 0
        while let line = lines.next() {
            if line.isEmpty { break }
            count += 1
            guard count <= HTTPLimits.maxHeaderCount else {
                throw HTTPError(431, "too many header fields", closesConnection: true)
            }
            let first = head[line.lowerBound]
            guard first != ASCII.space, first != ASCII.tab else {
                throw HTTPError.malformed("obsolete line folding")
            }
            var colon = line.lowerBound
            while colon < line.upperBound, head[colon] != ASCII.colon {
                guard ASCII.isTokenByte(head[colon]) else {
                    throw HTTPError.malformed("bad character in header name")
                }
                colon += 1
            }
            guard colon < line.upperBound, colon > line.lowerBound else {
                throw HTTPError.malformed("header line without a name and colon")
            }
            var valueStart = colon + 1, valueEnd = line.upperBound
            while valueStart < valueEnd, head[valueStart] == ASCII.space || head[valueStart] == ASCII.tab {
                valueStart += 1
            }
            while valueEnd > valueStart, head[valueEnd - 1] == ASCII.space || head[valueEnd - 1] == ASCII.tab {
                valueEnd -= 1
            }
            for i in valueStart..<valueEnd {
                let byte = head[i]
                if (byte < ASCII.space && byte != ASCII.tab) || byte == ASCII.del {
                    throw HTTPError.malformed("control character in header value")
                }
            }
            headers.add(string(head, line.lowerBound..<colon), string(head, valueStart..<valueEnd))
        }
        return headers
    }

    private static func matches(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int, _ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard offset + count <= bytes.count else { return false }
        let pointer = literal.utf8Start
        for i in 0..<count where bytes[offset + i] != pointer[i] { return false }
        return true
    }

    private static func string(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }
}

/// Yields the lines of a head as ranges without their CRLF or LF.
struct LineIterator {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var position = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    mutating func next() -> Range<Int>? {
        guard position < bytes.count else { return nil }
        var end = position
        while end < bytes.count, bytes[end] != ASCII.lf { end += 1 }
        let next = min(end + 1, bytes.count)
        if end > position, bytes[end - 1] == ASCII.cr { end -= 1 }
        defer { position = next }
        // A CR anywhere else in a line is not a line ending: reject it at the value check.
        return position..<end
    }
}
