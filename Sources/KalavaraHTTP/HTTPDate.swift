import Foundation
import Synchronization

/// IMF-fixdate strings (RFC 9110 §5.6.7), cached per second because every response has one.
public enum HTTPDate {
    /// The second the cached line is for, and the line.
    private static let cache = Mutex<(second: Int, line: [UInt8])>((0, []))

    /// "Date: ...\r\nServer: kalavara\r\n\r\n": the end of every response head, as bytes,
    /// rebuilt once a second.
    static func headerLine() -> [UInt8] {
        let second = time(nil)
        return cache.withLock { cache in
            if second != cache.second {
                cache = (second, Array("Date: \(format(second))\r\nServer: kalavara\r\n\r\n".utf8))
            }
            return cache.line
        }
    }

    /// Written byte by byte into the string's own storage: a volume's GET formats its
    /// `Last-Modified` on every request, and the interpolated form (`slowFormat`, still used
    /// for years outside 0...9999) cost 5,600 instructions of a 75,000-instruction GET.
    public static func format(_ seconds: Int) -> String {
        var value = seconds
        var parts = tm()
        guard gmtime_r(&value, &parts) != nil else { return slowFormat(seconds) }
        let year = Int(parts.tm_year) + 1900
        guard (0...9999).contains(year), (0...6).contains(parts.tm_wday), (0...11).contains(parts.tm_mon) else {
            return slowFormat(seconds)
        }
        return String(unsafeUninitializedCapacity: 29) { out in
            var at = 0
            func put(_ byte: UInt8) {
                out[at] = byte
                at += 1
            }
            func name(_ index: Int) {
                for offset in 0..<3 { put(Self.names[3 * index + offset]) }
            }
            func two(_ n: Int32, then separator: UInt8) {
                put(UInt8(truncatingIfNeeded: 48 + n / 10))
                put(UInt8(truncatingIfNeeded: 48 + n % 10))
                put(separator)
            }
            name(Int(parts.tm_wday))
            put(UInt8(ascii: ","))
            put(UInt8(ascii: " "))
            two(parts.tm_mday, then: UInt8(ascii: " "))
            name(7 + Int(parts.tm_mon))
            put(UInt8(ascii: " "))
            put(UInt8(truncatingIfNeeded: 48 + year / 1000))
            put(UInt8(truncatingIfNeeded: 48 + year / 100 % 10))
            put(UInt8(truncatingIfNeeded: 48 + year / 10 % 10))
            put(UInt8(truncatingIfNeeded: 48 + year % 10))
            put(UInt8(ascii: " "))
            two(parts.tm_hour, then: UInt8(ascii: ":"))
            two(parts.tm_min, then: UInt8(ascii: ":"))
            two(parts.tm_sec, then: UInt8(ascii: " "))
            for byte in "GMT".utf8 { put(byte) }
            return at
        }
    }

    /// The days' then the months' abbreviations, three bytes each.
    private static let names: [UInt8] = Array("SunMonTueWedThuFriSatJanFebMarAprMayJunJulAugSepOctNovDec".utf8)

    /// The reference form, for what `format` does not write itself.
    static func slowFormat(_ seconds: Int) -> String {
        var value = seconds
        var parts = tm()
        gmtime_r(&value, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) "
            + "\(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}

extension HTTPDate {
    /// Seconds since 1970 of a date in any form a client may send in `Date` or a conditional
    /// header: IMF-fixdate, RFC 1123/2822 with any zone (`GMT`, `UT`, `Z`, `+0000`, `-0500`,
    /// the US zone names) and with or without the weekday and seconds, and the obsolete
    /// RFC 850 (`Sunday, 06-Dec-26 10:02:46 GMT`) and asctime (`Sun Dec  6 10:02:46 2026`)
    /// forms HTTP still asks recipients to read (RFC 9110 §5.6.7). S3 reads them all: s3cmd
    /// signs Signature V2 requests with `+0000`. Nil when the text is no date. By hand with
    /// timegm: a DateFormatter costs more to make than a signature check.
    public static func parse(_ text: String) -> Int? {
        var tokens = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," }).map(String.init)
        // A weekday says nothing the date does not (and RFC 2822 makes it optional).
        if let first = tokens.first, first.first?.isLetter == true, month(first) == nil { tokens.removeFirst() }
        guard tokens.count >= 3 else { return nil }
        let day: Int?, monthIndex: Int?, year: Int?, clock: String, zone: String
        if let index = month(tokens[0]) {
            // asctime: Dec 6 10:02:46 2026, always GMT.
            guard tokens.count == 4 else { return nil }
            (monthIndex, day, clock, year, zone) = (index, Int(tokens[1]), tokens[2], Int(tokens[3]), "GMT")
        } else if tokens[0].contains("-") {
            // RFC 850: 06-Dec-26 10:02:46 GMT.
            let parts = tokens[0].split(separator: "-").map(String.init)
            guard parts.count == 3, tokens.count == 3 else { return nil }
            (day, monthIndex, year, clock, zone) = (Int(parts[0]), month(parts[1]), Int(parts[2]), tokens[1], tokens[2])
        } else {
            // RFC 1123 / 2822: 06 Dec 2026 10:02:46 +0000.
            guard tokens.count == 5 else { return nil }
            (day, monthIndex, year, clock, zone) = (Int(tokens[0]), month(tokens[1]), Int(tokens[2]), tokens[3], tokens[4])
        }
        guard let day, let monthIndex, var year, (1...31).contains(day), let offset = zoneOffset(zone) else { return nil }
        // Two-digit years (RFC 850, RFC 2822's obsolete form): 00-49 are 20xx, 50-99 19xx.
        if year < 100 { year += year < 50 ? 2000 : 1900 }
        let units = clock.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
        guard (2...3).contains(units.count), let hour = units[0], let minute = units[1], (0...23).contains(hour),
              (0...59).contains(minute), (1000...9999).contains(year) else { return nil }
        let second = units.count == 3 ? units[2] : 0
        guard let second, (0...60).contains(second) else { return nil }
        var fields = tm()
        (fields.tm_year, fields.tm_mon, fields.tm_mday) = (Int32(year - 1900), Int32(monthIndex), Int32(day))
        (fields.tm_hour, fields.tm_min, fields.tm_sec) = (Int32(hour), Int32(minute), Int32(second))
        return Int(timegm(&fields)) - offset
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    private static func month(_ text: String) -> Int? { months.firstIndex(of: text.lowercased()) }

    /// Seconds east of UTC.
    private static func zoneOffset(_ zone: String) -> Int? {
        switch zone.uppercased() {
        case "GMT", "UT", "UTC", "Z": return 0
        case "EDT": return -4 * 3600
        case "EST", "CDT": return -5 * 3600
        case "CST", "MDT": return -6 * 3600
        case "MST", "PDT": return -7 * 3600
        case "PST": return -8 * 3600
        default:
            let bytes = Array(zone.utf8)
            guard bytes.count == 5, bytes[0] == UInt8(ascii: "+") || bytes[0] == UInt8(ascii: "-"),
                  let hours = Int(zone.dropFirst().prefix(2)), let minutes = Int(zone.suffix(2)),
                  bytes[1...].allSatisfy({ (0x30...0x39).contains($0) }), hours <= 23, minutes <= 59 else { return nil }
            return (bytes[0] == UInt8(ascii: "-") ? -1 : 1) * (hours * 3600 + minutes * 60)
        }
    }
}
