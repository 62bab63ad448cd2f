import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraSupport
import XCTest

/// The admin answers' JSON goes through the encoder's snake_case key strategy; these are
/// the bytes the hand-written `encode(to:)` methods it replaced wrote, keys and nulls alike
/// (docs/API.md; the tests, scripts and CLI read them).
final class AdminJSONTests: XCTestCase {
    private func text(_ value: some Encodable) throws -> String {
        guard case .bytes(let bytes) = try HTTPResponse.snakeCaseJSON(200, value).body else { throw CocoaError(.coderInvalidValue) }
        return String(decoding: bytes, as: UTF8.self)
    }

    func testScrubProgress() throws {
        XCTAssertEqual(try text(Scrubber.Progress()), """
            {"bytes_checked":0,"checked":0,"corrupt":0,"last_pass_finished":null,"passes":0,"running":false,\
            "stale_removed":0,"unknown_files":null,"unverified":0}

            """)
        XCTAssertEqual(try text(Scrubber.Progress(running: true, checked: 3, corrupt: 1, unverified: 2, bytesChecked: 4096,
                                                  staleRemoved: 5, unknownFiles: 7, passes: 2, lastPassFinished: 1_700_000_000)), """
            {"bytes_checked":4096,"checked":3,"corrupt":1,"last_pass_finished":1700000000,"passes":2,"running":true,\
            "stale_removed":5,"unknown_files":7,"unverified":2}

            """)
    }

    func testRepairProgress() throws {
        XCTAssertEqual(try text(Reconciler.Progress()), """
            {"bytes_copied":0,"copied":0,"errors":0,"last_pass_finished":null,"misplaced":0,"passes":0,"removed":0,\
            "running":false,"scanned":0,"under_replicated":0}

            """)
        XCTAssertEqual(try text(Reconciler.Progress(running: true, scanned: 10, underReplicated: 2, misplaced: 3, copied: 4,
                                                    bytesCopied: 5, removed: 6, errors: 7, passes: 8,
                                                    lastPassFinished: 1_700_000_000)), """
            {"bytes_copied":5,"copied":4,"errors":7,"last_pass_finished":1700000000,"misplaced":3,"passes":8,"removed":6,\
            "running":true,"scanned":10,"under_replicated":2}

            """)
    }

    func testRebuildProgress() throws {
        XCTAssertEqual(try text(Rebuilder.Progress(running: true, volumesDone: 1, volumesTotal: 2, keysFound: 3, filesSeen: 4,
                                                   errors: 5)), """
            {"errors":5,"files_seen":4,"keys_found":3,"running":true,"volumes_done":1,"volumes_total":2}

            """)
    }

    func testVolumeList() throws {
        let volumes = VolumeList(volumes: [
            VolumeList.Entry(url: "http://a:1", state: .up, live: true, zone: "default", keys: nil, freeBytes: nil, unknownFiles: nil, diskFull: false),
            VolumeList.Entry(url: "http://b:2/x", state: .draining, live: false, zone: "rack-2", keys: 1, freeBytes: 2, unknownFiles: 3, diskFull: true),
        ])
        XCTAssertEqual(try text(volumes), """
            {"volumes":[{"disk_full":false,"free_bytes":null,"keys":null,"live":true,"state":"up","unknown_files":null,\
            "url":"http://a:1","zone":"default"},{"disk_full":true,"free_bytes":2,"keys":1,"live":false,"state":"draining","unknown_files":3,\
            "url":"http://b:2/x","zone":"rack-2"}]}

            """)
    }
}
