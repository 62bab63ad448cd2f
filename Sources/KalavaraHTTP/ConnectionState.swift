/// Where one client connection is in its life, with the transitions between, each a
/// mutating method that returns what the caller must do (`Action`).
///
/// Why a state machine: the loop, the timeout sweep and the workers each used to set their
/// own fields (idle since, head started at, scan position, accepted at, evicted); a phase
/// that is one of these cases cannot be half one and half another, and a transition that
/// says what to do next keeps the decisions here, where a table of tests checks them, and
/// the I/O in `ServerConnection` and `EventLoop`, which perform the actions. Like NIO's
/// `ConnectionState` and Go's `ConnState`, but the transitions that matter here are who
/// owns the connection (the event loop, or one worker) and which timeout applies.
///
/// What it cannot hold is the eviction handshake with the accepting thread: that is shared
/// between threads, so it is the atomic `IdleMark`. The state says what to publish there
/// (`idleSince`), and takes the handshake's outcome as an event (`headComplete(claimed:)`,
/// `evictionSeen()`).
struct ConnectionState {
    enum Phase {
        /// Between requests, owned by the event loop: the idle timeout runs from `since`.
        case idle(since: Double)
        /// The first bytes of a head have arrived (at `startedAt`): the whole head must
        /// arrive within the read timeout. `scanned` bytes have been searched for its end.
        case readingHead(startedAt: Double, scanned: Int)
        /// A whole head has arrived and the event loop is answering it: no longer idle, so
        /// not evictable (see `IdleMark`).
        case answering
        /// Handed to a worker, which starts with `job` (`takeWork`).
        case handedOff
        /// A worker owns it and serves requests until it is idle.
        case working
        /// Done: closed, or about to be.
        case closed
    }

    private(set) var phase: Phase
    /// When it was accepted, until its first request head is complete (then nil): such a
    /// connection must deliver that head within the head timeout, whatever it sends
    /// meanwhile (line breaks, a trickle).
    private(set) var freshSince: Double?
    /// What a worker starts with: set exactly while the phase is `handedOff`. Kept beside
    /// the phase rather than as its payload so that the phase is plain data: the loop
    /// reads and changes it several times a request, and an enum carrying a request and a
    /// response is copied through value witnesses and `memcpy` each time (2,000
    /// instructions a request when it did).
    private(set) var job: Work?

    init(acceptedAt now: Double) {
        phase = .idle(since: now)
        freshSince = now
    }

    init(_ phase: Phase, freshSince: Double? = nil, job: Work? = nil) {
        self.phase = phase
        self.freshSince = freshSince
        self.job = job
    }

    /// What a worker is handed. The loop has already parsed the head (and perhaps
    /// answered it, and resolved its route), so the worker never does either again.
    enum Work {
        /// A parsed request whose route may block, or that has a body.
        case request(HTTPRequest, Exchange)
        /// An answer the loop made but cannot send without blocking (a file for sendfile).
        case answer(HTTPResponse, HTTPRequest, Exchange)
        /// Answer bytes the socket would not take at once.
        case pendingOutput([UInt8], closeAfter: Bool)
        /// A head that cannot be served: the worker answers the error and closes.
        case badHead(HTTPError)
    }

    /// What the owner of the connection does after a transition.
    enum Action: Equatable {
        /// Nothing until the client sends more (the loop keeps watching).
        case wait
        /// Search the buffered bytes for the end of a head, from this offset.
        case scan(from: Int)
        /// Parse and answer the complete head; `firstHead`: the connection's first, so it
        /// no longer counts as fresh (`HTTPServer.delivered`).
        case serve(firstHead: Bool)
        /// Look for another request in what is buffered (pipelining).
        case next
        /// Give it to a worker, which starts with `takeWork()`.
        case handOff
        /// The worker is done with it: back to the event loop.
        case giveBack
        /// Close it quietly.
        case close
        /// Answer `408` (the head did not arrive in time), then close.
        case answerTimeoutAndClose
    }

    // MARK: - On the event loop

    /// Bytes are buffered (line breaks already skipped): from idle, a head begins and the
    /// read timeout starts now; a head in progress carries on from where its scan stopped.
    mutating func bytesPending(now: Double) -> Action {
        switch phase {
        case .readingHead(_, let scanned): return .scan(from: scanned)
        case .idle, .answering:
            phase = .readingHead(startedAt: now, scanned: 0)
            return .scan(from: 0)
        case .handedOff, .working, .closed: return closing()
        }
    }

    /// Line breaks before a head were skipped: a scan in progress starts again at 0 (what
    /// it had searched is gone), but the head's clock keeps running.
    mutating func lineBreaksSkipped() {
        if case .readingHead(let startedAt, _) = phase { phase = .readingHead(startedAt: startedAt, scanned: 0) }
    }

    /// Nothing is buffered: idle again. After skipped line breaks, idle since the head
    /// began, not since now: bare line breaks between requests are not a request (RFC 9112
    /// §2.2), and counted as activity they would let a client keep a connection open past
    /// the idle timeout, and look freshly used to the eviction that makes room.
    mutating func nothingPending(now: Double) -> Action {
        switch phase {
        case .idle: break
        case .readingHead(let startedAt, _): phase = .idle(since: startedAt)
        case .answering: phase = .idle(since: now)
        case .handedOff, .working, .closed: return closing()
        }
        return .wait
    }

    /// The head is not complete in what is buffered (`scanned` bytes searched).
    mutating func headIncomplete(scanned: Int) -> Action {
        guard case .readingHead(let startedAt, _) = phase else { return closing() }
        phase = .readingHead(startedAt: startedAt, scanned: scanned)
        return .wait
    }

    /// A whole head is here. `claimed`: whether the owner turned its `IdleMark` to busy;
    /// false means the accepting thread evicted it first, and it must close unserved.
    mutating func headComplete(claimed: Bool) -> Action {
        guard case .readingHead = phase, claimed else {
            return closing()
        }
        phase = .answering
        defer { freshSince = nil }
        return .serve(firstHead: freshSince != nil)
    }

    /// The whole buffer holds no complete head and no more fits (`431`), or similar: a
    /// worker answers `error` and closes. `claimed` as for `headComplete`.
    mutating func headRefused(_ error: HTTPError, claimed: Bool) -> Action {
        guard case .readingHead = phase, claimed else {
            return closing()
        }
        phase = .handedOff
        job = .badHead(error)
        return .handOff
    }

    /// The loop answered a request whole: the next one may already be buffered.
    mutating func answered(keepAlive: Bool, now: Double) -> Action {
        guard case .answering = phase, keepAlive else {
            return closing()
        }
        phase = .idle(since: now)
        return .next
    }

    /// A worker takes over with `work` (a head that cannot be served, a request that may
    /// block, an answer to send by blocking).
    mutating func handOff(_ work: Work) -> Action {
        guard case .answering = phase else { return closing() }
        phase = .handedOff
        job = work
        return .handOff
    }

    /// The client hung up, the socket failed, or the connection is being closed.
    mutating func lost() -> Action { closing() }

    /// Closed, its job (if any) dropped. Also the answer to an event the phase cannot take
    /// (a bug in the caller): close rather than serve from a muddle.
    private mutating func closing() -> Action {
        phase = .closed
        job = nil
        return .close
    }

    /// The accepting thread won the connection (`IdleMark.evict`): close it.
    mutating func evictionSeen() -> Action { closing() }

    /// Where the timeouts stand for a connection the loop owns: `.wait`, `.close` (idle
    /// past the idle timeout, or a fresh one that sent nothing within the head timeout),
    /// or `.answerTimeoutAndClose` (a head incomplete past the read timeout, or a fresh
    /// connection's first head past the head timeout).
    mutating func timeoutCheck(now: Double, readTimeout: Double, idleTimeout: Double,
                               headTimeout: Double = .infinity) -> Action {
        let action: Action
        switch phase {
        case .idle(let since):
            let expired = now - since > idleTimeout || freshSince.map { now - $0 > headTimeout } ?? false
            action = expired ? .close : .wait
        case .readingHead(let startedAt, _):
            let expired = now - startedAt > readTimeout || freshSince.map { now - $0 > headTimeout } ?? false
            action = expired ? .answerTimeoutAndClose : .wait
        case .answering, .handedOff, .working, .closed:
            return .wait
        }
        if action != .wait { _ = closing() }
        return action
    }

    // MARK: - On a worker

    /// The job the loop handed over; from here the worker owns the connection.
    mutating func takeWork() -> Work? {
        guard case .handedOff = phase, let work = job else {
            _ = closing()
            return nil
        }
        job = nil
        phase = .working
        return work
    }

    /// The worker has nothing more to serve: back to the loop, unless the server is
    /// stopping or the connection is not the worker's.
    mutating func workerIdle(stopping: Bool) -> Action {
        guard case .working = phase, !stopping else { return closing() }
        return .giveBack
    }

    /// The loop watches it again (after a worker, or when first accepted).
    mutating func watched(now: Double) {
        switch phase {
        case .idle, .closed: break
        case .readingHead, .answering, .handedOff, .working:
            phase = .idle(since: now)
            job = nil
        }
    }

    // MARK: - What others see

    /// Since when the event loop has owned it without a request being answered, or nil
    /// while it is busy (answering, a worker's) or closed: what `IdleMark` publishes, and
    /// what ranks connections for eviction.
    var idleSince: Double? {
        switch phase {
        case .idle(let since): return since
        case .readingHead(let startedAt, _): return startedAt
        case .answering, .handedOff, .working, .closed: return nil
        }
    }

    var isClosed: Bool {
        if case .closed = phase { return true }
        return false
    }
}

/// The bookkeeping of one request: which route (resolved once, on the loop or, for a
/// request the loop handed off unresolved, on the worker), when its head was complete, and
/// how many bytes its head had.
struct Exchange {
    /// The index of its route in `Router.routes`; nil until resolved, and for a request no
    /// route takes (answered `404`/`405` where it was resolved).
    var route: Int?
    let started: ContinuousClock.Instant
    let headBytes: Int
}
