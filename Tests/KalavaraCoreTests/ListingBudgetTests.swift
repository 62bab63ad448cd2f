@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

/// `--listing-memory`: a listing that finds the budget taken waits briefly, then is refused.
final class ListingBudgetTests: XCTestCase {
    func testAListingPastTheBudgetIsRefusedAfterItsWaitAndAdmittedOnceBudgetComesBack() {
        let budget = ListingBudget(bytes: 4 << 20)
        XCTAssertTrue(budget.take(Listing.reservedBytes(limit: 10_000), waiting: 0))
        XCTAssertTrue(budget.take(Listing.reservedBytes(limit: 10_000), waiting: 0))
        let start = Date()
        XCTAssertFalse(budget.take(Listing.reservedBytes(limit: 1), waiting: 0.2))
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.2)
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { budget.give(Listing.reservedBytes(limit: 10_000)) }
        XCTAssertTrue(budget.take(Listing.reservedBytes(limit: 10_000), waiting: 2))
        budget.give(Listing.reservedBytes)
        // A small page reserves in proportion: many fit where one large one does.
        for _ in 0..<10 { XCTAssertTrue(budget.take(Listing.reservedBytes(limit: 1), waiting: 0)) }
    }
}
