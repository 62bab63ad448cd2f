import Foundation
@testable import KalavaraCore
@testable import KalavaraHTTP
@testable import KalavaraS3
@testable import KalavaraSupport
import XCTest

/// The gateway's pure parts: its XML reader and writer, how metadata is encoded into the
/// index record, bucket names, upload IDs, CRC-32C.
final class S3LogicTests: XCTestCase {
    func testXMLBodiesAsClientsSendThem() throws {
        let body = """
        <?xml version="1.0" encoding="UTF-8"?>
        <!-- boto3 sends the namespace; the aws CLI a prefix -->
        <CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
          <Part><PartNumber>1</PartNumber><ETag>&quot;abc&quot;</ETag></Part>
          <s3:Part><s3:PartNumber> 2 </s3:PartNumber><ETag>"d&amp;e"</ETag></s3:Part>
          <Empty/>
        </CompleteMultipartUpload>
        """
        let root = try S3XML.parse(Array(body.utf8))
        XCTAssertEqual(root.name, "CompleteMultipartUpload")
        XCTAssertEqual(root.all("Part").count, 2)
        XCTAssertEqual(root.all("Part")[0].value("ETag"), "\"abc\"")
        XCTAssertEqual(root.all("Part")[1].value("PartNumber"), "2")
        XCTAssertEqual(root.all("Part")[1].value("ETag"), "\"d&e\"")
        XCTAssertEqual(try S3XML.parse(Array("<Delete><Object><Key>&#x41;&#66;</Key></Object></Delete>".utf8))
            .child("Object")?.value("Key"), "AB")
        for bad in ["", "<a>", "<a></b>", "<!DOCTYPE x [<!ENTITY e 'boom'>]><a>&e;</a>", "<a>&unknown;</a>", "<a></a><b/>",
                    String(repeating: "<a>", count: 100) + String(repeating: "</a>", count: 100)] {
            XCTAssertThrowsError(try S3XML.parse(Array(bad.utf8)), bad)
        }
        var writer = S3XML.Writer()
        writer.element("R", namespace: true) { $0.text("Key", "a<b>&\"c\"\u{1}") }
        XCTAssertTrue(writer.text.hasSuffix("<R xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Key>a&lt;b&gt;&amp;&quot;c&quot;&#1;</Key></R>"))
        XCTAssertEqual(try S3XML.parse(writer.bytes).value("Key"), "a<b>&\"c\"\u{1}")
    }

    func testMetadataRoundTripsThroughItsEncoding() throws {
        let headers = HTTPHeaders([("Content-Type", "text/plain; charset=utf-8"), ("Content-Encoding", "aws-chunked, gzip"),
                                   ("X-Amz-Meta-Colour", "blue & green"), ("x-amz-meta-empty", ""), ("Cache-Control", "no-cache")])
        var attributes = try ObjectAttributes(request: headers)
        XCTAssertEqual(attributes.header("Content-Encoding"), "gzip", "aws-chunked is framing, not a property of the object")
        attributes.etag = "0123abc-3"
        let decoded = ObjectAttributes(encoded: attributes.encoded)
        XCTAssertEqual(decoded, attributes)
        XCTAssertEqual(decoded.metadata.map(\.name), ["colour", "empty"])
        XCTAssertEqual(decoded.metadata.first?.value, "blue & green")
        XCTAssertTrue(attributes.encoded.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }, "fits in a header as it is")
        XCTAssertThrowsError(try ObjectAttributes(request: HTTPHeaders([("x-amz-meta-big", String(repeating: "x", count: 2100))])))
        XCTAssertEqual(ObjectAttributes(encoded: "garbage=%zz"), ObjectAttributes())
        let info = ObjectInfo(size: 3, version: 1_700_000_000_000 << 16, md5: Hex.encode(MD5.digest(Array("abc".utf8))),
                              attributes: ObjectAttributes())
        XCTAssertEqual(info.etag, "\"900150983cd24fb0d6963f7d28e17f72\"")
        XCTAssertEqual(info.lastModified, 1_700_000_000)
        XCTAssertEqual(ObjectInfo.iso8601(1_700_000_000), "2023-11-14T22:13:20.000Z")
        XCTAssertEqual(HTTPDate.parse("Tue, 14 Nov 2023 22:13:20 GMT"), 1_700_000_000)
    }

    /// Every form of a date S3 reads in `Date` (Signature V2 and V4) and conditional
    /// headers (issue 21: s3cmd --signature-v2 sends `+0000`, which was read as a skew).
    func testHTTPDatesInEveryFormClientsSend() {
        let instant = 1_796_551_366 // Sun, 06 Dec 2026 10:02:46 GMT
        for text in ["Sun, 06 Dec 2026 10:02:46 GMT", "Sun, 06 Dec 2026 10:02:46 +0000", "Sun, 06 Dec 2026 10:02:46 -0000",
                     "Sun, 6 Dec 2026 10:02:46 UT", "06 Dec 2026 10:02:46 UTC", "Sun, 06 Dec 2026 11:02:46 +0100",
                     "Sun, 06 Dec 2026 05:02:46 EST", "Sun, 06 Dec 2026 02:02:46 PST", "Sun, 06 Dec 2026 04:32:46 -0530",
                     "Sunday, 06-Dec-26 10:02:46 GMT", "Sun Dec  6 10:02:46 2026", "Sun, 06 Dec 2026 10:02:46 Z",
                     "sun, 06 dec 2026 10:02:46 gmt"] {
            XCTAssertEqual(HTTPDate.parse(text), instant, text)
        }
        XCTAssertEqual(HTTPDate.parse("Sun, 06 Dec 2026 10:02 GMT"), instant - 46)
        XCTAssertEqual(HTTPDate.parse(HTTPDate.format(instant)), instant)
        for bad in ["", "yesterday", "Sun, 06 Dec 2026", "Sun, 32 Dec 2026 10:02:46 GMT", "Sun, 06 Foo 2026 10:02:46 GMT",
                    "Sun, 06 Dec 2026 24:02:46 GMT", "Sun, 06 Dec 2026 10:02:46 +2500", "Sun, 06 Dec 2026 10:02:46 XYZ",
                    "Sun, 06 Dec 2026 10:02:46 +00", "20261206T100246Z", "Sun Dec 6 10:02:46", "Sun, 06 Dec 2026 10:x:46 GMT"] {
            XCTAssertNil(HTTPDate.parse(bad), bad)
        }
        // A request signed with Date and no x-amz-date: Signature V4 signs its x-amz-date form.
        XCTAssertEqual(SignatureV4.amzTimestamp("Sun, 06 Dec 2026 10:02:46 +0000"), "20261206T100246Z")
    }

    func testIndexRecordsKeepMD5AndAttributes() throws {
        let record = IndexRecord(version: 42 << 16, size: 7, holders: [1, 3], floor: 9, checksum: 0xDEADBEEF,
                                 md5: MD5.digest(Array("x".utf8)), attributes: Array("ct=text%2Fplain&m.a=b".utf8))
        XCTAssertEqual(IndexRecord(decoding: record.encoded()), record)
        let bare = IndexRecord(version: 5, size: 1, holders: [2])
        XCTAssertEqual(IndexRecord(decoding: bare.encoded()), bare)
        XCTAssertEqual(bare.encoded().count, 21, "a record without attributes costs what it did")
        var truncated = record.encoded()
        truncated.removeLast(5)
        XCTAssertNil(IndexRecord(decoding: truncated))
        var lying = record.encoded()
        lying[1] |= 32 // claims attributes the bytes do not hold
        XCTAssertNil(IndexRecord(decoding: Array(lying.prefix(40))))
    }

    func testBucketNamesUploadIDsAndCRC32C() {
        for good in ["abc", "my-bucket.2026", "a" + String(repeating: "b", count: 62)] { XCTAssertTrue(S3Context.isValidBucketName(good), good) }
        for bad in ["ab", "x_y", "Upper", "-start", "end-", "a..b", "a.-b", "192.168.1.1", String(repeating: "a", count: 64), ".s3"] {
            XCTAssertFalse(S3Context.isValidBucketName(bad), bad)
        }
        let id = S3Gateway.newUploadID(now: Date(timeIntervalSince1970: 1_800_000_000.5))
        XCTAssertEqual(id.count, 28)
        XCTAssertEqual(S3Gateway.uploadTime(id) ?? 0, 1_800_000_000.5, accuracy: 0.001)
        XCTAssertNil(S3Gateway.uploadTime("../../etc"))
        var crc = CRC32C()
        Array("123456789".utf8).withUnsafeBytes { crc.update($0) }
        XCTAssertEqual(crc.value, 0xE306_9283)
        XCTAssertThrowsError(try S3Context.indexKey(bucket: "b", key: Array(repeating: 0x61, count: 1023)))
        XCTAssertEqual(try S3Context.indexKey(bucket: "b", key: Array("k/../x".utf8)).description, "b/k/../x")
    }
}
