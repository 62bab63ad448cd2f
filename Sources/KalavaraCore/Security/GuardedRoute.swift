import KalavaraHTTP

/// A route declared with who may call it: the daemon's `AccessGate` refuses anyone else
/// before the handler runs, so no handler can forget it. The HTTP layer knows routes; who
/// may call them is the cluster's business, and is added here.
struct GuardedRoute: Sendable {
    let route: Route
    let access: Access

    init(_ name: String, _ path: Route.Path, methods: [String], on execution: Route.Execution = .worker,
                access: Access, _ handler: @escaping Route.Handler) {
        route = Route(name, path, methods: methods, on: execution, handler)
        self.access = access
    }

    /// The route with `gate` in front of its handler (the route itself when the gate can
    /// refuse nothing for its access, as on an open cluster).
    func guarded(by gate: AccessGate) -> Route {
        guard gate.mayRefuse(access) else { return route }
        let handler = route.handler, access = access
        return Route(route.name, route.path, methods: route.methods, on: route.execution) { request, body in
            if let refusal = gate.refusal(request, access) { return refusal }
            return try handler(request, body)
        }
    }
}

extension Router {
    /// The routes of a daemon behind `gate`: exact paths before prefixes, otherwise in order.
    init(_ routes: [GuardedRoute], gate: AccessGate = .open) {
        self.init(routes.map { $0.guarded(by: gate) })
    }
}

extension ClusterSecret: RequestSigner {
    public func sign(_ headers: inout HTTPHeaders, method: String, target: String, body: [UInt8]?, length: Int?) {
        SignedCall.sign(&headers, method: method, target: target, body: body, length: length, secret: self)
    }

    public func isSigned(_ headers: HTTPHeaders) -> Bool {
        headers[SignedCall.signatureHeader] != nil
    }
}
