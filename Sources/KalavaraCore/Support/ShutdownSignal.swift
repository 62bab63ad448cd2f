import Foundation

/// Waits for SIGINT or SIGTERM so a daemon can shut down gracefully.
///
/// The signals are ignored at the process level and delivered through Dispatch instead,
/// so the handler runs as ordinary code (no async-signal-safety limits). A second signal
/// while shutting down exits at once: an operator pressing Ctrl-C twice means it.
public enum ShutdownSignal {
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    public static func wait() {
        let received = DispatchSemaphore(value: 0)
        let queue = DispatchQueue(label: "signals")
        let lock = NSLock()
        var count = 0
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler {
                lock.lock()
                count += 1
                let first = count == 1
                lock.unlock()
                if first {
                    received.signal()
                } else {
                    Log.warning("second signal: exiting now")
                    _exit(1)
                }
            }
            source.resume()
            sources.append(source)
        }
        received.wait()
    }
}
