@testable import KalavaraHTTP
import XCTest

/// `QueryView` (a volume's GET reads its ticket through it) must answer exactly as
/// `QueryParameters` does, which every other query goes through.
final class QueryViewTests: XCTestCase {
    private let names = ["t", "ver", "m", "h", "rid", "n", "x", "sig", "", "a b", "é"]

    func testAnswersAsQueryParametersDo() throws {
        let queries = [
            "t=1&ver=117740314419331072",
            "t=1&ver=7&x=1790000000&sig=00ff",
            "t=1&ver=7&m=http%3A%2F%2F127.0.0.1%3A3000&h=http%3A%2F%2Fa%3A1%2Chttp%3A%2F%2Fb%3A2&n=-1",
            "ver=1&ver=2&t=1",                 // the first of a name wins
            "&&t&ver=&=x&%76er=9",             // empty pairs, no '=', an empty name, an escaped name
            "a%20b=c%26d&%C3%A9=%C3%A9",        // escaped separators and UTF-8
            "",
        ]
        for query in queries {
            let view = try QueryView(Substring(query))
            let parameters = try QueryParameters(Substring(query))
            for name in names {
                XCTAssertEqual(view[name], parameters[name], "\(name) in \(query)")
            }
        }
        XCTAssertNil(try QueryView(nil)["t"])
        XCTAssertEqual(try QueryView("&&t&ver=&=x&%76er=9")["ver"], "", "the first `ver`, empty, not the escaped one after it")
    }

    func testAMalformedEscapeAnywhereIsA400() {
        for query in ["t=1&ver=7&z=%4", "t=1&ver=7&z=%G0", "%=1", "t=1%"] {
            XCTAssertThrowsError(try QueryParameters(Substring(query)), query)
            XCTAssertThrowsError(try QueryView(Substring(query)), query) { error in
                XCTAssertEqual((error as? HTTPError)?.status, 400)
            }
        }
    }
}
