import Foundation
import KalavaraSupport
import Synchronization

/// Waits for SIGINT or SIGTERM so a daemon can shut down gracefully.
///
/// The signals are ignored at the process level and delivered through Dispatch instead,
/// so the handler runs as ordinary code (no async-signal-safety limits). A second signal
/// while shutting down exits at once: an operator pressing Ctrl-C twice means it.
enum ShutdownSignal {
    /// Kept alive for the process's life: a released source stops delivering.
    private static let sources = Mutex<[Kept]>([])
    /// A source held only to keep it alive; nothing touches it again.
    private struct Kept: @unchecked Sendable { let source: any DispatchSourceSignal }
    /// Signals received so far.
    private static let received = Atomic<Int>(0)

    static func wait() {
        let first = DispatchSemaphore(value: 0)
        let queue = DispatchQueue(label: "signals")
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler {
                if received.add(1, ordering: .relaxed).newValue == 1 {
                    first.signal()
                } else {
                    Log.warning("second signal: exiting now")
                    _exit(1)
                }
            }
            source.resume()
            let kept = Kept(source: source)
            sources.withLock { $0.append(kept) }
        }
        first.wait()
    }
}
