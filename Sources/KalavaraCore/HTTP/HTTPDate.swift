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

    public static func format(_ seconds: Int) -> String {
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
