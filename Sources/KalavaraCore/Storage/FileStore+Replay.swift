// FileStore's crash replay: making the files match the uncommitted journal.
import Foundation

extension FileStore {
    /// Makes the files match what the journal recorded since its last checkpoint, after a
    /// crash: a value whose file is missing or not whole is written again (durably, from
    /// the journal's copy); a removed one is removed again. Returns how many files changed.
    public func replay(_ records: [(entry: UncommittedJournal.Entry, settlement: UncommittedJournal.Settlement)]) throws -> Int {
        var changed = 0
        for (entry, settlement) in records {
            let stem = Self.fileStem(entry.key)
            let path = path(stem: stem, version: entry.version)
            switch settlement {
            case .removed:
                if unlink(path) == 0 {
                    try syncBucket(bucket(forStem: stem))
                    changed += 1
                }
            case .value(let bytes, let crc):
                // A whole file that passes its own checksum stays, even with other bytes: a
                // version is written once, so it is the upload whose rename won (another
                // upload of the same version, refused with 409, journaled its bytes too).
                if let held = try? open(entry.key, version: entry.version), held.checksum != nil,
                   (try? readVerified(held)).flatMap({ $0 }) != nil {
                    continue
                }
                if unlink(path) == 0 { try syncBucket(bucket(forStem: stem)) }
                let write = try beginWrite(key: entry.key, version: entry.version)
                do {
                    try write.append(bytes)
                    try write.finish(expecting: crc)
                } catch {
                    write.abort()
                    throw error
                }
                changed += 1
            }
        }
        return changed
    }
}
