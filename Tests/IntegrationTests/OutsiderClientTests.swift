import Foundation
import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// What clients that outsiders tried saw at the edges of the native API (issue 21, item 6).
final class OutsiderClientTests: XCTestCase {
    /// A client that does not follow a write's 307 (Go's http.Client with a body it cannot
    /// rewind, HTTPie --chunked, curl without -L) is told what to do, and nothing is stored.
    func testAWriteRedirectThatIsNotFollowedSaysWhatToDo() throws {
        let cluster = try TestCluster.started(volumes: 1)
        let url = cluster.masterURL + "/store/unfollowed"
        let put = try runTool("curl", ["-sS", "-XPUT", "-d", "value", "-w", "\n%{http_code}", url])
        XCTAssertEqual(put.status, 0, put.output)
        XCTAssertTrue(put.output.hasPrefix("not stored yet: send this PUT again, with its body, to the Location"), put.output)
        XCTAssertTrue(put.output.hasSuffix("\n307"), put.output)
        XCTAssertEqual(try HTTP.send("GET", url).status, 404, "an unfollowed PUT leaves no trace")

        XCTAssertEqual(try runTool("curl", ["-sS", "-L", "-XPUT", "-d", "value", url]).status, 0)
        let delete = try HTTP.send("DELETE", url)
        XCTAssertEqual(delete.status, 307)
        XCTAssertTrue(delete.text.hasPrefix("not deleted yet: send this DELETE again to the Location"), delete.text)
        XCTAssertEqual(delete.headers["Content-Type"], "text/plain; charset=utf-8")
        XCTAssertEqual(try HTTP.send("GET", url).status, 302, "an unfollowed DELETE deletes nothing")
    }

    /// The README's native read of an S3 object with `-f`: under --auth-file a refused read
    /// fails (exit 22) instead of writing the 401's text into the file with exit 0.
    func testReadmeDownloadFailsOnRefusalInsteadOfSavingTheMessage() throws {
        let cluster = try TestCluster()
        let users = cluster.root + "/users"
        try "reader s3cr3t read,write\n".write(toFile: users, atomically: true, encoding: .utf8)
        let volume = try cluster.startVolume()
        _ = try cluster.startMaster(volumePorts: [volume], extra: ["--auth-file", users])
        let url = cluster.masterURL + "/store/photos/2026/cat.jpg"
        XCTAssertEqual(try runTool("curl", ["-sSf", "-u", "reader:s3cr3t", "-L", "-XPUT", "--data-binary", "meow", url]).status, 0)
        let file = cluster.root + "/cat.jpg"
        let refused = try runTool("curl", ["-sfL", "-o", file, url])
        XCTAssertEqual(refused.status, 22, refused.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file), "a refused read leaves no file")
        let allowed = try runTool("curl", ["-sfL", "-u", "reader:s3cr3t", "-o", file, url])
        XCTAssertEqual(allowed.status, 0, allowed.output)
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8), "meow")
    }
}
