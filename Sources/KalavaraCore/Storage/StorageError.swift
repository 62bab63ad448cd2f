// StorageError: a storage failure and the HTTP answer it maps to.
import Foundation
import KalavaraHTTP

/// A storage failure, mapped to an HTTP answer: a full disk is `507`, the rest `500`.
enum StorageError: Error, CustomStringConvertible, Sendable {
    case io(String, Int32)
    case corrupt(String)
    /// A copy's bytes did not match the checksum its sender gave.
    case checksumMismatch
    /// This version of the key is already stored: a version is written once.
    case versionExists

    var description: String {
        switch self {
        case .io(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        case .corrupt(let what): return what
        case .checksumMismatch: return "the value does not match its checksum"
        case .versionExists: return "this version of the key is already stored"
        }
    }

    var httpError: HTTPError {
        switch self {
        // EFBIG: the file size limit (RLIMIT_FSIZE) is a disk that is full for this process.
        case .io(_, let code) where code == ENOSPC || code == EDQUOT || code == EFBIG:
            return HTTPError(507, "volume is out of disk space")
        case .checksumMismatch:
            return HTTPError(422, "the value does not match its checksum")
        case .versionExists:
            return HTTPError(409, "this version of the key is already stored here: a version is written once")
        default:
            return HTTPError(500, "storage error: \(description)")
        }
    }
}
