import KalavaraHTTP
import KalavaraSupport

extension HTTPServer {
    /// With TLS, reloads the certificate and key on every `SIGHUP` (a renewal replaces the
    /// files, then signals): new connections get the new certificate, open ones keep theirs.
    /// A bad file keeps the certificate in force, with an error in the log. Without TLS the
    /// signal is caught all the same: a `systemctl reload` (deploy/systemd) never stops a daemon.
    public func reloadTLSOnHangup() {
        guard servesTLS else {
            Hangup.onSignal { Log.info("SIGHUP: no TLS certificate to reload") }
            return
        }
        Hangup.onSignal { [self] in
            do {
                if let serial = try reloadTLS() { Log.info("SIGHUP: reloaded the TLS certificate (serial \(serial))") }
            } catch {
                Log.error("SIGHUP: kept the TLS certificate in force: \(error)")
            }
        }
    }
}
