@testable import KalavaraHTTP
import XCTest

/// `HTTPDate.format` writes its bytes by hand: it must say exactly what the interpolated
/// reference (`slowFormat`) says, for every kind of date.
final class HTTPDateTests: XCTestCase {
    func testFormatMatchesTheReference() {
        XCTAssertEqual(HTTPDate.format(0), "Thu, 01 Jan 1970 00:00:00 GMT")
        XCTAssertEqual(HTTPDate.format(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT") // RFC 9110's example
        var generator = SystemRandomNumberGenerator()
        let samples = [0, 1, 59, 86_399, 86_400, 951_782_400, 4_102_444_799, 253_402_300_799, -1, -86_400]
            + (0..<2000).map { _ in Int.random(in: 0...4_102_444_800, using: &generator) }
        for seconds in samples {
            XCTAssertEqual(HTTPDate.format(seconds), HTTPDate.slowFormat(seconds), "\(seconds)")
            XCTAssertEqual(HTTPDate.parse(HTTPDate.format(seconds)), seconds, "\(seconds)")
        }
        // Past year 9999 the reference form answers.
        XCTAssertEqual(HTTPDate.format(253_402_300_800), HTTPDate.slowFormat(253_402_300_800))
    }
}
