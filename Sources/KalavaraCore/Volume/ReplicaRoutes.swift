/// The volume-to-volume side of replication, under `/internal/`: a replica receives copies
/// from the placement's first volume and hears the outcome of their commit; the master's
/// removal queue drops stale copies through here too.
extension Volume {
    /// `PUT` and `DELETE /internal/replica/KEY`.
    func replica(_ key: Key, _ request: HTTPRequest, _ body: MessageBody) throws -> HTTPResponse {
        let parameters = try QueryParameters(request.query)
        if request.method == "PUT" {
            // A copy for a write the sending volume will commit: durable and journaled
            // here, committed or discarded later.
            guard let ticket = try PlacementTicket(parameters) else { throw HTTPError(400, "replica copy without a ticket") }
            if let masterURL = ticket.master { master.learnMaster(masterURL) }
            let size = try receiveValue(key, version: ticket.version, from: body)
            return .text(200, "durable, \(size) bytes")
        }
        if let below = parameters["below"].flatMap(UInt64.init) {
            for version in store.versions(of: key) where version < below { try dropVersion(key, version) }
        } else if let exact = parameters["exact"].flatMap(UInt64.init) {
            try dropVersion(key, exact)
        } else {
            throw HTTPError(400, "replica removal needs below= or exact=")
        }
        return HTTPResponse(status: 204)
    }

    /// `POST /internal/committed/KEY?ver=V[&previous=P]`: the outcome of a write this
    /// volume holds a copy of.
    func committed(_ key: Key, _ parameters: QueryParameters) throws -> HTTPResponse {
        guard let version = parameters["ver"].flatMap(UInt64.init) else { throw HTTPError(400, "missing ver") }
        journal.strike(key, version: version)
        let previous = parameters["previous"].flatMap(UInt64.init)
        if previous != nil { scheduleSupersededDrop(key, by: version, previous: previous) }
        return .text(200, "noted")
    }

    func dropVersion(_ key: Key, _ version: UInt64) throws {
        try store.remove(key, version: version)
        journal.strike(key, version: version)
    }
}
