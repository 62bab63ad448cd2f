import KalavaraHTTP
import KalavaraSupport
/// Every route of a volume, once. Health checks and reads are answered on the event loop
/// (a small value is read into memory there; a large one goes to a worker for sendfile);
/// writes, deletes and the internal replica routes run on workers.
extension Volume {
    var router: Router {
        Router([
            GuardedRoute("store-read", .prefix("/store/"), methods: ["GET", "HEAD"], on: .eventLoop, access: .ticket) { [unowned self] request, _ in
                try storageErrorsAnswered(request) {
                    let key = try Self.key(request, "/store/")
                    let ticket = try PlacementTicket.verified(try PlacementTicket(QueryView(request.query)), for: .read, key,
                                                              secret: gate.secret)
                    try checkAddressed(ticket, as: .holder)
                    return try serveValue(key, version: ticket?.version, request: request)
                }
            },
            GuardedRoute("store-write", .prefix("/store/"), methods: ["PUT", "DELETE"], access: .ticket) { [unowned self] request, body in
                try storageErrorsAnswered(request) {
                    let key = try Self.key(request, "/store/")
                    let ticket = try PlacementTicket.verified(try PlacementTicket(QueryView(request.query)),
                                                              for: request.method == "PUT" ? .put : .delete, key, secret: gate.secret)
                    try checkAddressed(ticket, as: .first)
                    return request.method == "PUT"
                        ? try storeValue(key, ticket: ticket, request: request, body: body)
                        : try deleteValue(key, ticket: ticket)
                }
            },
            GuardedRoute("replica", .prefix("/internal/replica/"), methods: ["PUT", "DELETE"], access: .cluster(streamed: true)) { [unowned self] request, body in
                try storageErrorsAnswered(request) {
                    try replica(try Self.key(request, "/internal/replica/"), request, body)
                }
            },
            GuardedRoute("committed", .prefix("/internal/committed/"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] request, _ in
                try committed(try Self.key(request, "/internal/committed/"), QueryParameters(request.query))
            },
            GuardedRoute("copy", .prefix("/internal/copy/"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] request, _ in
                try storageErrorsAnswered(request) {
                    try copyOut(try Self.key(request, "/internal/copy/"), QueryParameters(request.query))
                }
            },
            GuardedRoute("inventory", .exact("/internal/inventory"), methods: ["GET"], access: .cluster(streamed: false)) { [unowned self] request, _ in
                try inventory(QueryParameters(request.query))
            },
            GuardedRoute("scrub-status", .exact("/admin/scrub"), methods: ["GET", "HEAD"], access: .open) { [unowned self] _, _ in
                try .snakeCaseJSON(200, scrubber.snapshot)
            },
            // A pass reads every file on the disk: in a signed cluster only the cluster may
            // start one (the master's `POST /admin/scrub`, which asks an operator for `admin`).
            GuardedRoute("scrub", .exact("/admin/scrub"), methods: ["POST"], access: .cluster(streamed: false)) { [unowned self] _, _ in
                .text(202, scrubber.request() ? "scrub pass started" : "scrub pass already running")
            },
            GuardedRoute("health", .exact("/health"), methods: ["GET", "HEAD"], on: .eventLoop, access: .open) { [unowned self] request, _ in
                health(request)
            },
            GuardedRoute("metrics", .exact("/metrics"), methods: ["GET", "HEAD"], access: .open) { [unowned self] _, _ in
                .metrics(metrics)
            },
        ], gate: gate)
    }

    private static func key(_ request: HTTPRequest, _ prefix: String) throws -> Key {
        try Key(percentEncoded: request.path.dropFirst(prefix.count))
    }

    /// A volume acts only on a ticket meant for it: the master records the ticket's holders
    /// as the value's, so a write or delete acted on by another volume (a client that sent
    /// the redirect's query elsewhere) would leave the disks differing from the index, a
    /// copy the delete missed, and a value a rebuild brings back. This volume's URL comes
    /// from `-b` or the master's health checks; before either, an open volume takes it from
    /// the ticket as it always did, while a signed one sends a client back (`503`) but takes
    /// a replica's copy, which only a first holder that checked itself forwards (signed).
    func checkAddressed(_ ticket: PlacementTicket?, as addressee: PlacementTicket.Addressee) throws {
        guard let ticket, let first = ticket.holders.first else { return }
        guard let me = master.selfURL else {
            guard addressee == .first else { return }
            if gate.secret == nil { return master.learnSelf(first) }
            var error = HTTPError(503, "this volume does not know its own URL yet (no -b, no health check from the master yet): retry")
            error.headers["Retry-After"] = "1"
            throw error
        }
        guard !ticket.addresses(me, as: addressee) else { return }
        throw HTTPError(403, addressee == .first
            ? "this ticket is for \(first), not this volume (\(me)): send the request where the master's redirect says"
            : "this volume (\(me)) is not among the ticket's holders")
    }

    /// A storage failure becomes its HTTP answer (a full disk is `507`) and a log line.
    private func storageErrorsAnswered(_ request: HTTPRequest, _ body: () throws -> HTTPResponse) throws -> HTTPResponse {
        do {
            return try body()
        } catch let error as StorageError {
            Log.error("\(request.method) \(request.path): \(error)")
            throw error.httpError
        }
    }

    /// `GET /health`: alive, with free space and its zone. The master's checks also say who it is and
    /// which URL it knows this volume by, which is how a volume without -m/-b learns both.
    /// In a signed cluster it learns them only from a signed check, and signs its answer
    /// (bound to the check's signature), which is how the master knows it is talking to a
    /// volume of its cluster.
    func health(_ request: HTTPRequest) -> HTTPResponse {
        let trusted = gate.secret == nil || gate.isClusterCall(request)
        if trusted, let master = request.headers[VolumeHeaders.master] { self.master.learnMaster(master) }
        if trusted, let me = request.headers[VolumeHeaders.selfURL] { self.master.learnSelf(me) }
        var response = HTTPResponse.text(200, "ok")
        response.headers.set(VolumeHeaders.freeBytes, String(store.freeBytes()))
        response.headers.set(VolumeHeaders.totalBytes, String(store.totalBytes()))
        response.headers.set(VolumeHeaders.zone, configuration.zone)
        if let server { response.headers.set(VolumeHeaders.requests, String(server.requestsAnswered)) }
        if let count = store.valueFileCount { response.headers.set(VolumeHeaders.valueCount, String(count)) }
        if let unknown = scrubber.snapshot.unknownFiles { response.headers.set(VolumeHeaders.unknownFiles, String(unknown)) }
        if !journal.reserve.isHeld { response.headers.set(VolumeHeaders.diskFull, "read-and-delete") }
        if trusted, let secret = gate.secret { SignedCall.signHealthAnswer(&response.headers, request: request, secret: secret) }
        return response
    }
}
