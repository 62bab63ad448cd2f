// Reconciler+Fixing: fixing one key — scheduling the fix, copying to new holders, committing them, notifying volumes.
import Foundation
import KalavaraHTTP
import KalavaraSupport

extension Reconciler {
    // MARK: Fixing one key

    func schedule(_ key: Key) {
        guard fixing.withLock({ $0.insert(key).inserted }) else { return } // already being fixed
        slots.wait()
        inFlight.enter()
        workers.run { [self] in
            defer {
                fixing.withLock { _ = $0.remove(key) }
                slots.signal()
                inFlight.leave()
            }
            fix(key)
        }
    }

    /// Waits for the copies in flight, logging progress every 10 s while they run (one
    /// batch of large values can take minutes).
    func waitForCopies() {
        var lastLog = monotonicSeconds()
        while inFlight.wait(timeout: .now() + 1) == .timedOut {
            if monotonicSeconds() - lastLog >= 10, progress.withLock({ $0.running }) {
                lastLog = monotonicSeconds()
                logProgress("repair pass, copying", since: nil)
            }
        }
    }

    func fail(_ message: String) {
        Log.warning(message)
        metrics.errors.increment()
        progress.withLock { $0.errors += 1 }
    }

    /// Repairs one key: copies, then a commit of the new holders, then removals.
    private func fix(_ key: Key) {
        guard let record = try? master.record(for: key), !record.isTombstone else { return }
        let view = PlacementView(registry: master.registry, replicas: replicas)
        // A volume with a removal of this key still queued would lose a fresh copy to it.
        let plan = view.plan(key, record, copiable: { target in
            let free = ((try? master.pendingRemoval(volume: target, key: key)) ?? nil).map { $0 <= record.version } ?? true
            if !free { self.retrySoon.store(true, ordering: .relaxed) }
            return free
        })
        guard plan.keep.count != record.holders.count || !plan.keep.allSatisfy(record.holders.contains) else { return }
        var sources = record.holders.filter(view.live.contains)
        guard !sources.isEmpty || plan.targets.isEmpty else {
            return fail("repair: no live holder of \(key) to copy from")
        }
        var copied: [UInt16] = []
        for target in plan.targets {
            switch copy(key, record, from: sources, to: target) {
            case .copied: copied.append(target)
            case .failed: break
            case .sourceMissing(let source):
                // The index lists a copy that is not there: drop that holder; the key is
                // looked at again with the others.
                sources.removeAll { $0 == source }
                if (try? master.dropCorruptHolder(key, version: record.version, holder: source, keepingLast: true)) == true {
                    Log.error("repair: \(master.registry.volume(source)?.url ?? "?") has no copy of \(key) v\(record.version); holder dropped")
                    requestKey(key)
                    return
                }
            }
        }
        // Holders to keep, from the copies that really exist now.
        var actual = record
        actual.holders = record.holders + copied
        let final = view.plan(key, actual, copiable: { _ in false })
        guard final.keep.count != record.holders.count || !final.keep.allSatisfy(record.holders.contains) else { return }
        let outcome: HoldersOutcome
        do {
            outcome = try master.commitHolders(key, version: record.version, expected: record.holders, new: final.keep)
        } catch {
            return fail("repair: committing new holders of \(key): \(error)")
        }
        let listed: [UInt16]
        switch outcome {
        case .committed:
            metrics.removals.increment(by: Int64(final.drop.count))
            progress.withLock { $0.removed += final.drop.count }
            for target in copied { notify(target, key, "POST", "/internal/committed", "ver=\(record.version)") }
            return
        case .superseded:
            listed = []
        case .holdersChanged(let holders):
            listed = holders
        }
        // The key changed meanwhile (a client's write or delete won, a holder was dropped):
        // the copies made are of no use unless the index lists them. A later pass looks at
        // the key again.
        for target in copied where !listed.contains(target) {
            notify(target, key, "DELETE", "/internal/replica", "exact=\(record.version)")
        }
    }

    /// Has a live holder stream the key's version to `target`. The target checks the bytes
    /// against the value's checksum before it keeps them.
    enum CopyOutcome { case copied, failed, sourceMissing(UInt16) }

    private func copy(_ key: Key, _ record: IndexRecord, from sources: [UInt16], to target: UInt16) -> CopyOutcome {
        guard let targetURL = master.registry.volume(target)?.url else { return .failed }
        let size = Int(clamping: record.size)
        limiter.take(size)
        for source in sources {
            guard let sourceURL = master.registry.volume(source)?.url else { continue }
            var query = QueryParameters()
            query.add("ver", String(record.version))
            query.add("to", targetURL)
            guard let url = HTTPURL("\(sourceURL)/internal/copy/\(key.pathComponent)?\(query.encoded)") else { continue }
            do {
                let answer = try copyClient.send("POST", url)
                if answer.status == 200 {
                    metrics.copies.increment()
                    metrics.bytes.increment(by: Int64(size))
                    progress.withLock {
                        $0.copied += 1
                        $0.bytesCopied += size
                    }
                    Log.debug("repair copied \(key) v\(record.version) \(sourceURL) → \(targetURL)")
                    return .copied
                }
                if answer.status == 404 { return .sourceMissing(source) }
                fail("repair: copy of \(key) from \(sourceURL) to \(targetURL): \(answer.status) "
                     + answer.text.trimmingCharacters(in: .whitespacesAndNewlines))
            } catch {
                fail("repair: copy of \(key) from \(sourceURL) to \(targetURL): \(error)")
            }
        }
        return .failed
    }

    private func notify(_ volume: UInt16, _ key: Key, _ method: String, _ path: String, _ query: String) {
        guard let base = master.registry.volume(volume)?.url,
              let url = HTTPURL("\(base)\(path)/\(key.pathComponent)?\(query)") else { return }
        _ = try? noticeClient.send(method, url)
    }
}
