import Foundation

/// A throwaway certificate authority made with the `openssl` command in a directory of
/// its own, and leaf certificates it signs for 127.0.0.1 and localhost: what the TLS tests
/// start daemons with. ECDSA P-256 keys (fast to make and to handshake with).
public final class TestCertificates {
    public let directory: String
    /// The CA's certificate (PEM): what clients trust.
    public var authority: String { directory + "/ca.pem" }
    private var authorityKey: String { directory + "/ca.key" }

    /// Makes a CA named `name` in `directory` (created if need be).
    public init(directory: String, name: String = "Kalavara Test CA") throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", authorityKey, "-out", authority, "-days", "2", "-subj", "/CN=\(name)"])
    }

    /// A leaf certificate and key signed by this CA, for `IP:127.0.0.1` and `DNS:localhost`,
    /// with serial number `serial`; files `<name>.pem` and `<name>.key`. Made again under
    /// the same name, it replaces the files (a renewal).
    @discardableResult
    public func leaf(_ name: String, serial: Int) throws -> (certificate: String, key: String) {
        let certificate = directory + "/\(name).pem", key = directory + "/\(name).key"
        let request = directory + "/\(name).csr", extensions = directory + "/\(name).ext"
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
            .write(toFile: extensions, atomically: true, encoding: .utf8)
        try Self.openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", key + ".new", "-out", request, "-subj", "/CN=localhost"])
        try Self.openssl(["x509", "-req", "-in", request, "-CA", authority, "-CAkey", authorityKey,
                          "-set_serial", String(serial), "-days", "2", "-out", certificate + ".new", "-extfile", extensions])
        // Renamed into place, as a renewal tool does: a reader sees the old pair or the new.
        try Self.replace(key, with: key + ".new")
        try Self.replace(certificate, with: certificate + ".new")
        return (certificate, key)
    }

    private static func replace(_ path: String, with fresh: String) throws {
        guard rename(fresh, path) == 0 else { throw CertificateError("rename \(fresh): \(String(cString: strerror(errno)))") }
    }

    /// Whether the `openssl` command is there (tests that need it require it).
    public static var available: Bool { executableInPath("openssl") != nil }

    private static func openssl(_ arguments: [String]) throws {
        guard let tool = executableInPath("openssl") else { throw CertificateError("openssl is not installed") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CertificateError("openssl \(arguments.first ?? ""): \(String(decoding: text, as: UTF8.self))")
        }
    }
}

public struct CertificateError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
