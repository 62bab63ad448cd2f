/// Which handler answers which request on a volume.
extension Volume {
    func route(_ request: HTTPRequest, _ body: MessageBody) throws -> HTTPResponse {
        let path = request.path
        if path.hasPrefix("/store/") {
            let key = try Key(percentEncoded: path.dropFirst("/store/".count))
            let parameters = try QueryParameters(request.query)
            let ticket = try PlacementTicket(parameters)
            do {
                switch request.method {
                case "PUT": return try storeValue(key, ticket: ticket, request: request, body: body)
                case "GET", "HEAD": return try serveValue(key, version: ticket?.version, request: request)
                case "DELETE": return try deleteValue(key, ticket: ticket)
                default: throw HTTPError.methodNotAllowed(["GET", "HEAD", "PUT", "DELETE"])
                }
            } catch let error as StorageError {
                Log.error("\(request.method) \(key): \(error)")
                throw error.httpError
            }
        }
        if path.hasPrefix("/internal/") {
            do {
                if let response = try replicaRoute(request, body) { return response }
            } catch let error as StorageError {
                Log.error("\(request.method) \(path): \(error)")
                throw error.httpError
            }
        }
        switch path {
        case "/health":
            guard request.method == "GET" || request.method == "HEAD" else { throw HTTPError.methodNotAllowed(["GET", "HEAD"]) }
            return health(request)
        case "/metrics":
            guard request.method == "GET" || request.method == "HEAD" else { throw HTTPError.methodNotAllowed(["GET", "HEAD"]) }
            var response = HTTPResponse.text(200, metrics.render())
            response.headers.set("Content-Type", "text/plain; version=0.0.4")
            return response
        default:
            return .text(404, "no such endpoint")
        }
    }

    /// Values up to this size are answered on the event loop, read into memory; larger ones
    /// go out with sendfile from a worker. One page-cache read of a few pages is cheaper
    /// than waking a thread.
    static let quickValueBytes = 64 * 1024

    /// The requests answered on the event loop: health checks, and reads of small values.
    func quickRoute(_ request: HTTPRequest) -> HTTPResponse? {
        guard request.method == "GET" || request.method == "HEAD" else { return nil }
        if request.path == "/health" { return health(request) }
        guard request.path.hasPrefix("/store/") else { return nil }
        do {
            let key = try Key(percentEncoded: request.path.dropFirst("/store/".count))
            let ticket = try PlacementTicket(QueryParameters(request.query))
            return try serveValue(key, version: ticket?.version, request: request)
                .inlined(upTo: Self.quickValueBytes, forHead: request.isHead)
        } catch let error as HTTPError {
            return .error(error)
        } catch {
            return nil // a storage error: the worker path reports it
        }
    }

    /// `GET /health`: alive, with free space. The master's checks also say who it is and
    /// which URL it knows this volume by, which is how a volume without -m/-b learns both.
    func health(_ request: HTTPRequest) -> HTTPResponse {
        if let master = request.headers[VolumeHeaders.master] { self.master.learnMaster(master) }
        if let me = request.headers[VolumeHeaders.selfURL] { self.master.learnSelf(me) }
        var response = HTTPResponse.text(200, "ok")
        response.headers.set(VolumeHeaders.freeBytes, String(store.freeBytes()))
        if let count = store.valueFileCount { response.headers.set(VolumeHeaders.valueCount, String(count)) }
        return response
    }
}
