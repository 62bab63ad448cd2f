import Foundation
import KalavaraSupport

/// The uncommitted journal's file format, in one place: the lines written, how a file is
/// read back at start-up, and the compacted file that stands for a state.
///
/// An append-only text file of lines `+ VERSION HEXKEY UNIXTIME` (a version recorded as
/// uncommitted) and `- VERSION HEXKEY` (struck off). An addition may carry the value's
/// bytes (`+ VERSION HEXKEY UNIXTIME SIZE CRC HEXVALUE`), and a removal of a file is
/// recorded (`x VERSION HEXKEY`) before the file goes (see `JournalLog`). Reading a file
/// applies its lines in order, each setting what it says of its version: so a file
/// followed by more lines reads as the state its lines describe with those lines applied.
enum JournalFormat {
    typealias Entry = UncommittedJournal.Entry
    typealias Settlement = UncommittedJournal.Settlement

    // The journal's lines, one builder each.
    static func additionLine(_ entry: Entry, time: Double) -> String {
        "+ \(entry.version) \(Hex.encode(entry.key.bytes)) \(Int(time))\n"
    }

    static func valueLine(_ entry: Entry, time: Double, value: [UInt8], crc: UInt32) -> String {
        "+ \(entry.version) \(Hex.encode(entry.key.bytes)) \(Int(time)) \(value.count) \(String(crc, radix: 16)) \(Hex.encode(value))\n"
    }

    static func removalLine(_ entry: Entry) -> String { "x \(entry.version) \(Hex.encode(entry.key.bytes))\n" }

    static func strikeLine(_ entry: Entry) -> String { "- \(entry.version) \(Hex.encode(entry.key.bytes))\n" }

    /// What a journal file says.
    struct Contents {
        /// Pending entry → when it was recorded.
        var pending: [Entry: Double] = [:]
        /// What start-up must make true of files, since the last checkpoint.
        var settlements: [Entry: Settlement] = [:]
        /// Bytes up to the last line's end (a crash may have torn the line after it).
        var wholeLines = 0
    }

    /// Reads the journal at `path` (empty if there is none).
    static func read(_ path: String) -> Contents {
        var contents = Contents()
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return contents }
        contents.wholeLines = text.utf8.lastIndex(of: 0x0A).map { text.utf8.distance(from: text.utf8.startIndex, to: $0) + 1 } ?? 0
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3, let version = UInt64(fields[1]),
                  let keyBytes = Hex.decode(fields[2]), let key = try? Key(keyBytes) else { continue }
            let entry = Entry(key: key, version: version)
            switch fields[0] {
            case "+":
                // A value record cut short (the crash came mid-write) was never durable,
                // so never acknowledged: it is dropped whole.
                if fields.count == 7 {
                    guard let size = Int(fields[4]), let crc = UInt32(fields[5], radix: 16),
                          let value = Hex.decode(fields[6]), value.count == size, CRC32.checksum(value) == crc else { continue }
                    contents.settlements[entry] = .value(value, crc: crc)
                } else {
                    contents.settlements[entry] = nil // an fsynced write of this version
                }
                contents.pending[entry] = fields.count > 3 ? Double(fields[3]) ?? 0 : 0
            case "x":
                contents.settlements[entry] = .removed
            default:
                contents.pending[entry] = nil
            }
        }
        return contents
    }

    /// The shortest file that reads as this state: the pending entries and the unsettled records.
    static func compacted(pending: [Entry: Double], unsettled: [Entry: Settlement]) -> String {
        var text = ""
        for (entry, time) in pending {
            switch unsettled[entry] {
            case .value(let bytes, let crc)?:
                text += valueLine(entry, time: time, value: bytes, crc: crc)
            case .removed?:
                text += additionLine(entry, time: time) + removalLine(entry)
            case nil:
                text += additionLine(entry, time: time)
            }
        }
        // Unsettled records of versions no longer pending: a value (its addition, then its
        // strike) or a removal.
        for (entry, settlement) in unsettled where pending[entry] == nil {
            switch settlement {
            case .value(let bytes, let crc):
                text += valueLine(entry, time: 0, value: bytes, crc: crc) + strikeLine(entry)
            case .removed:
                text += removalLine(entry)
            }
        }
        return text
    }
}
