import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// The README's curl commands, verbatim but for the ports, against real daemons.
final class ReadmeCommandsTests: XCTestCase {
    func testCurlPutGetDeleteAndAddVolume() throws {
        let cluster = try TestCluster.started(volumes: 1)
        let master = "http://localhost:\(cluster.masterPort)"

        var result = try runTool("curl", ["-sS", "-L", "-XPUT", "-d", "value", "\(master)/store/key", "-w", "%{http_code}"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.hasSuffix("201"), result.output)

        result = try runTool("curl", ["-sS", "-L", "\(master)/store/key"])
        XCTAssertEqual(result.output, "value")

        result = try runTool("curl", ["-sS", "-L", "-XDELETE", "\(master)/store/key", "-w", "%{http_code}"])
        XCTAssertEqual(result.output, "204")

        result = try runTool("curl", ["-sS", "-L", "\(master)/store/key", "-o", "/dev/null", "-w", "%{http_code}"])
        XCTAssertEqual(result.output, "404")

        let newVolume = try cluster.startVolume()
        result = try runTool("curl", ["-sS", "-XPOST", "-d", cluster.volumeURL(newVolume), "\(master)/admin/add-volume",
                                  "-o", "/dev/null", "-w", "%{http_code}"])
        XCTAssertEqual(result.output, "200")
        let volumes = try HTTP.send("GET", cluster.masterURL + "/admin/volumes").text
        XCTAssertTrue(volumes.contains(cluster.volumeURL(newVolume)), volumes)
    }

    func testCurlFollowsRedirectWithLargeUploadAndExpectContinue() throws {
        let cluster = try TestCluster.started(volumes: 1)
        let file = cluster.root + "/upload.bin"
        let value = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try value.write(to: URL(fileURLWithPath: file))
        // curl -T sends Expect: 100-continue for a body this large; the master must answer
        // its 307 without a 100, and curl then sends the body to the volume only.
        var result = try runTool("curl", ["-sS", "-L", "-T", file, "\(cluster.masterURL)/store/big", "-w", "%{http_code}"])
        XCTAssertTrue(result.output.hasSuffix("201"), result.output)
        let out = cluster.root + "/download.bin"
        result = try runTool("curl", ["-sS", "-L", "-o", out, "\(cluster.masterURL)/store/big"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), value)
    }
}
