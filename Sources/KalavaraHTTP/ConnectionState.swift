/// Where one client connection is in its life, as one value with explicit transitions.
///
/// Why an enum: the loop, the timeout sweep and the workers each used to set their own
/// fields (idle since, head started at, scan position, pending output); a state that is
/// one of these cases cannot be half one and half another. Like NIO's `ConnectionState`
/// and Go's `ConnState`, but the transitions that matter here are who owns the connection
/// (the event loop, or one worker) and which timeout applies.
enum ConnectionState {
    /// Between requests, owned by the event loop: the idle timeout runs from `since`.
    case idle(since: Double)
    /// The first bytes of a head have arrived (at `startedAt`): the whole head must arrive
    /// within the read timeout. `scanned` bytes have been searched for its end already.
    case readingHead(startedAt: Double, scanned: Int)
    /// A whole head has arrived and the event loop is answering it: no longer idle, so not
    /// evictable (see `IdleMark`).
    case answering
    /// A worker owns the connection and starts with this.
    case working(Work)
    /// Done; the socket is closed or about to be.
    case closed

    /// What the event loop hands a worker. The loop has already parsed the head (and
    /// perhaps answered it), so the worker never parses it again.
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

    /// What a timeout sweep must do with a connection the loop owns.
    enum TimeoutAction: Equatable {
        /// Idle past the idle timeout: close quietly.
        case closeIdle
        /// A head still incomplete past the read timeout: answer `408` and close.
        case headTimedOut
    }

    /// Notes that bytes of a new head are here (from idle, the read timeout starts now).
    mutating func headBytesArrived(now: Double) -> (startedAt: Double, scanned: Int) {
        if case .readingHead(let startedAt, let scanned) = self { return (startedAt, scanned) }
        self = .readingHead(startedAt: now, scanned: 0)
        return (now, 0)
    }

    mutating func headIncomplete(startedAt: Double, scanned: Int) {
        self = .readingHead(startedAt: startedAt, scanned: scanned)
    }

    /// A whole head is here: the loop answers it (or hands it off) from now on.
    mutating func headComplete() { self = .answering }

    mutating func becameIdle(now: Double) { self = .idle(since: now) }

    /// Nothing is buffered after line breaks were skipped: idle, but from when it last was.
    /// Bare line breaks between requests are not a request (RFC 9112 §2.2): counted as
    /// activity, they would let a client keep a connection open past the idle timeout, and
    /// look freshly used to the eviction that makes room on a full server.
    mutating func nothingPending(now: Double) {
        switch self {
        case .idle: return
        case .readingHead(let startedAt, _): self = .idle(since: startedAt)
        case .answering, .working, .closed: self = .idle(since: now)
        }
    }

    /// Since when the event loop has owned it without a request being answered, or nil
    /// while a worker owns it (or it is closed): what ranks connections for eviction.
    var idleSince: Double? {
        switch self {
        case .idle(let since): return since
        case .readingHead(let startedAt, _): return startedAt
        case .answering, .working, .closed: return nil
        }
    }

    mutating func handOff(_ work: Work) { self = .working(work) }

    /// The job a worker was handed; the connection stays the worker's until it is idle.
    var work: Work? {
        if case .working(let work) = self { return work }
        return nil
    }

    /// `freshSince`: when a connection that has not yet delivered a first head was
    /// accepted; it gets `headTimeout` from then, whatever state it is in.
    func timeoutAction(now: Double, readTimeout: Double, idleTimeout: Double,
                       freshSince: Double? = nil, headTimeout: Double = .infinity) -> TimeoutAction? {
        if let freshSince, now - freshSince > headTimeout {
            switch self {
            case .idle: return .closeIdle
            case .readingHead: return .headTimedOut
            case .answering, .working, .closed: return nil
            }
        }
        switch self {
        case .idle(let since): return now - since > idleTimeout ? .closeIdle : nil
        case .readingHead(let startedAt, _): return now - startedAt > readTimeout ? .headTimedOut : nil
        case .answering, .working, .closed: return nil
        }
    }
}

/// The bookkeeping of one request for metrics: which route, when its head was complete,
/// and how many bytes its head had.
struct Exchange {
    var route: Int?
    let started: ContinuousClock.Instant
    let headBytes: Int
}
