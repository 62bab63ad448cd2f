import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import Prometheus
import Logging
import Synchronization

/// The S3 gateway daemon (`kalavara-s3`): S3's REST API, path-style, on the store's own HTTP
/// server, storing through the cluster like any client. Stateless: everything it knows is
/// in the master's index (see docs/s3.md for how names map).
///
/// Sendable by hand: every stored property is Sendable or thread-safe, except `server` and
/// `sweeper`, which `start` sets once before the listener admits anyone.
public final class S3Gateway: @unchecked Sendable {
    public let configuration: S3Configuration
    let cluster: ClusterLink
    let authenticator: S3Authenticator
    let metrics = Metrics()
    private let operations: Counter
    private let failures: Counter
    /// Buckets seen to exist lately: an object PUT need not ask the master every time.
    private let knownBuckets = Mutex<[String: Double]>([:])
    static let bucketMemory = 2.0
    /// Deletes of completed or aborted uploads' parts, after the client has its answer.
    let cleanup = DispatchQueue(label: "s3-cleanup")
    private var server: HTTPServer!
    private var sweeper: Thread?
    private let stopping = Atomic(false)

    public init(configuration: S3Configuration) throws {
        self.configuration = configuration
        let secret = try configuration.secretFile.map { try ClusterSecret(file: $0) }
        let credentials = try configuration.authFile.map { try Credentials(file: $0, keepingSecrets: true) }
        credentials?.reloadOnHangup()
        authenticator = S3Authenticator(credentials: credentials)
        cluster = ClusterLink(masters: configuration.masterURLs, secret: secret)
        operations = metrics.counter("kalavara_s3_requests_total", "S3 requests answered")
        failures = metrics.counter("kalavara_s3_errors_total", "S3 requests answered with an S3 error")
    }

    public func start() throws {
        signal(SIGPIPE, SIG_IGN)
        server = HTTPServer(configuration: configuration.server, router: router, metrics: metrics)
        try server.start()
        server.reloadTLSOnHangup()
        if authenticator.credentials == nil {
            Log.warning("no --auth-file: the gateway accepts any S3 credentials (and anonymous requests)")
        }
        if configuration.secretFile == nil {
            Log.warning("no --secret-file: the gateway's calls to the cluster are not signed (fine for an open cluster)")
        }
        let sweeper = Thread { [self] in sweepLoop() }
        sweeper.name = "s3-upload-sweeper"
        sweeper.start()
        self.sweeper = sweeper
        Log.info("S3 gateway listening on \(configuration.server.host):\(server.boundPort), storing through \(configuration.masterURLs.joined(separator: ","))")
    }

    public var boundPort: Int { server.boundPort }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
        server?.stop()
        cleanup.sync {}
    }

    public static func run(_ configuration: S3Configuration, logLevel: Logger.Level = .info) -> Int32 {
        Daemon.run("kalavara-s3", logLevel: logLevel) {
            let gateway = try S3Gateway(configuration: configuration)
            gateway.metrics.bootstrapSwiftMetrics()
            try gateway.start()
            return gateway.stop
        }
    }

    // MARK: Routes

    /// `/_health` and `/_metrics` cannot be buckets (a bucket name never starts with `_`);
    /// everything else is S3.
    var router: Router {
        Router([
            Route("health", .exact("/_health"), methods: ["GET", "HEAD"], on: .eventLoop) { _, _ in .text(200, "ok") },
            Route("metrics", .exact("/_metrics"), methods: ["GET", "HEAD"]) { [unowned self] _, _ in .metrics(metrics) },
            Route("s3", .prefix("/"), methods: ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"]) { [unowned self] request, body in
                answer(request, body)
            },
        ])
    }

    /// One request: who sent it, which operation it is, and its answer or S3 error.
    func answer(_ request: HTTPRequest, _ body: MessageBody) -> HTTPResponse {
        let requestID = Self.newRequestID()
        var response: HTTPResponse
        do {
            if request.method == "OPTIONS" {
                // A CORS preflight: no bucket of this gateway has a CORS configuration.
                throw request.headers["Origin"] == nil
                    ? S3Error(400, "BadRequest", "Insufficient information. Origin request header needed.")
                    : S3Error(403, "AccessForbidden", "CORSResponse: This CORS request is not allowed.")
            }
            let context: S3Context
            do {
                context = try authenticated(request, body, requestID: requestID)
            } catch let error as S3Error where error.code == "AccessDenied" && Self.isAnonymous(request) {
                // S3 tells an anonymous caller that a bucket does not exist before it refuses it.
                if let bucket = Self.bucketName(request), S3Context.isPlausibleBucket(bucket),
                   (try? cluster.locate(try Self.bucketKey(bucket))) ?? nil == nil {
                    throw S3Error.noSuchBucket(bucket)
                }
                throw error
            }
            guard let operation = S3Operation.table.first(where: { $0.matches(context) }) else {
                throw S3Error(501, "NotImplemented", "A header or query you provided implies functionality that is not implemented.")
            }
            guard context.identity.may(operation.right) else { throw S3Error.accessDenied }
            response = try operation.run(self, context)
        } catch let error as S3Error {
            failures.increment()
            response = error.response(requestID: requestID)
            if request.isHead { response.body = .empty } // HEAD errors carry no body
        } catch let error as HTTPError {
            failures.increment()
            response = S3Error(error.status, error.status == 414 ? "KeyTooLongError" : "InvalidRequest", error.message)
                .response(requestID: requestID)
        } catch ConnectionError.timedOut {
            response = S3Error(400, "RequestTimeout", "Your socket connection to the server was not read from or written to within the timeout period.")
                .response(requestID: requestID)
            response.headers.set("Connection", "close")
        } catch {
            failures.increment()
            Log.error("\(request.method) \(request.path): \(error)")
            response = S3Error.internalError("\(error)").response(requestID: requestID)
        }
        operations.increment()
        response.headers.set("x-amz-request-id", requestID)
        return response
    }

    /// The request's context once its signature is checked. Wrong signatures and unknown
    /// access keys count against the client's address like the master's failed Basic
    /// logins (`Credentials.failures`); past the limit the address gets `503 SlowDown`,
    /// which S3 clients answer by backing off, without its signature being checked.
    private func authenticated(_ request: HTTPRequest, _ body: MessageBody, requestID: String) throws -> S3Context {
        guard let failures = authenticator.credentials?.failures, !Self.isAnonymous(request) else {
            return try S3Context(request, body, authenticator: authenticator, requestID: requestID)
        }
        let peer = request.peer
        if let wait = failures.retryAfter(peer) {
            var error = S3Error(503, "SlowDown", "Too many failed signatures from this address; retry in \(wait) s.")
            error.headers["Retry-After"] = String(wait)
            throw error
        }
        do {
            return try S3Context(request, body, authenticator: authenticator, requestID: requestID)
        } catch let error as S3Error where Self.signatureFailures.contains(error.code) {
            let limited = failures.failed(peer)
            Log.info("authentication failed: \(error.code)", ["user": "\(request.context?.user ?? "-")", "peer": "\(peer)"])
            if limited { Log.warning("\(peer): failed signatures over the limit; answering 503 SlowDown until it waits") }
            throw error
        }
    }

    static let signatureFailures: Set<String> = ["SignatureDoesNotMatch", "InvalidAccessKeyId"]

    static func isAnonymous(_ request: HTTPRequest) -> Bool {
        request.headers["Authorization"] == nil && !(request.query ?? "").contains("Signature=")
    }

    /// The bucket a request's path names, if any.
    static func bucketName(_ request: HTTPRequest) -> String? {
        guard let path = PercentEncoding.decode(request.path.utf8) else { return nil }
        let name = path.dropFirst().prefix { $0 != UInt8(ascii: "/") }
        return name.isEmpty ? nil : String(decoding: name, as: UTF8.self)
    }

    static func newRequestID() -> String {
        var random = SystemRandomNumberGenerator()
        return Hex.encode((0..<8).map { _ in UInt8.random(in: 0...255, using: &random) }).uppercased()
    }

    // MARK: Buckets known to exist

    static let bucketPrefix = Array(".s3/buckets/".utf8)

    static func bucketKey(_ bucket: String) throws -> Key { try Key(bucketPrefix + Array(bucket.utf8)) }

    /// Throws `NoSuchBucket` unless the bucket exists.
    func requireBucket(_ bucket: String) throws {
        let now = monotonicSeconds()
        if let seen = knownBuckets.withLock({ $0[bucket] }), now - seen < Self.bucketMemory { return }
        // Only names CreateBucket accepts: `.s3` (the gateway's own keys) and native keys
        // outside any bucket are never reachable through S3.
        guard S3Context.isValidBucketName(bucket), try cluster.locate(try Self.bucketKey(bucket)) != nil else {
            throw S3Error.noSuchBucket(bucket)
        }
        knownBuckets.withLock { $0[bucket] = now }
    }

    func forgetBucket(_ bucket: String) { knownBuckets.withLock { _ = $0.removeValue(forKey: bucket) } }

    // MARK: Sweeping abandoned uploads

    private func sweepLoop() {
        var last = monotonicSeconds()
        while !stopping.load(ordering: .relaxed) {
            Thread.sleep(forTimeInterval: 1)
            guard monotonicSeconds() - last >= configuration.sweepEvery else { continue }
            last = monotonicSeconds()
            do {
                let swept = try sweepUploads(olderThan: configuration.uploadGrace)
                if swept > 0 { Log.info("removed \(swept) multipart upload(s) older than \(Int(configuration.uploadGrace)) s") }
            } catch {
                Log.warning("upload sweep failed: \(error)")
            }
        }
    }
}

/// Everything `kalavara-s3` is started with.
public struct S3Configuration: Sendable {
    public var server = HTTPServer.Configuration(host: "0.0.0.0", port: 9000)
    /// The masters (any of a group's: calls reach its leader).
    public var masterURLs = ["http://127.0.0.1:6000"]
    public var authFile: String?
    public var secretFile: String?
    /// Multipart uploads neither completed nor aborted this long are removed, parts and all.
    public var uploadGrace = 86400.0
    public var sweepEvery = 600.0
    /// Every part but the last must be at least this large (S3: 5 MiB).
    public var minPartSize = 5 * 1024 * 1024
    public init() {}
}
