@testable import KalavaraCore
import KalavaraHTTP
import KalavaraSupport
import XCTest

/// Which volume a placement ticket lets act (issue 21): the first holder for a client's
/// write or delete, another holder for a replica's copy, any holder for a read; a ticket
/// that names no holders binds no volume.
final class TicketAddresseeTests: XCTestCase {
    private let a = "http://127.0.0.1:7001", b = "http://127.0.0.1:7002", c = "http://127.0.0.1:7003"

    func testATicketActsOnlyWhereItNamesTheVolume() throws {
        let ticket = PlacementTicket(version: 5, master: "http://127.0.0.1:6000", holders: [a, b])
        XCTAssertTrue(ticket.addresses(a, as: .first))
        XCTAssertFalse(ticket.addresses(b, as: .first), "a replica is not where the client writes")
        XCTAssertFalse(ticket.addresses(c, as: .first))
        XCTAssertTrue(ticket.addresses(b, as: .replica))
        XCTAssertFalse(ticket.addresses(a, as: .replica), "the first holder receives no copy of its own write")
        XCTAssertFalse(ticket.addresses(c, as: .replica))
        XCTAssertTrue(ticket.addresses(b, as: .holder))
        XCTAssertFalse(ticket.addresses(c, as: .holder))
        XCTAssertTrue(PlacementTicket(version: 5).addresses(c, as: .holder), "a read's ticket names no volume")
    }

    func testHoldersAreComparedAsTheRegistryWritesThem() throws {
        // Parsed from a query, a holder written with a trailing slash is still that volume.
        var query = QueryParameters()
        query.add("t", "1")
        query.add("ver", "5")
        query.add("h", a + "/," + b)
        let ticket = try XCTUnwrap(try PlacementTicket(QueryParameters(Substring(query.encoded))))
        XCTAssertTrue(ticket.addresses(a, as: .first))
    }

    /// A client of the cluster (the S3 gateway) reads the version it was issued from the
    /// redirect's Location through the ticket type, for writes and reads alike.
    func testARedirectsTicketIsReadFromItsLocation() throws {
        let write = PlacementTicket(version: 41, master: "http://127.0.0.1:6000", holders: ["http://127.0.0.1:7000"],
                                    requestID: "r1", length: 5)
        let read = PlacementTicket(version: 42)
        for ticket in [write, read] {
            let location = try XCTUnwrap(HTTPURL("http://127.0.0.1:7000/store/a%20b?" + ticket.query))
            XCTAssertEqual(PlacementTicket(redirectedTo: location), ticket)
        }
        XCTAssertNil(PlacementTicket(redirectedTo: try XCTUnwrap(HTTPURL("http://127.0.0.1:7000/store/k"))))
        XCTAssertNil(PlacementTicket(redirectedTo: try XCTUnwrap(HTTPURL("http://127.0.0.1:7000/store/k?t=1&ver=0"))))
    }
}
