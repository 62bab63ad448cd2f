// libFuzzer entry point for the HTTP request parser and the other decoders that read
// client bytes. Built and run by scripts/fuzz (not part of the package build): it compiles
// these sources together with the parser's own files under -sanitize=fuzzer,address.
//
// Any crash, trap, or sanitizer report is a bug: every input must either parse or throw
// an HTTPError.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    if let length = MessageHeadParser.headLength(in: bytes) {
        let head = UnsafeBufferPointer(rebasing: bytes[0..<length])
        if let request = try? MessageHeadParser.parseRequest(head) {
            _ = try? QueryParameters(request.query)
            if request.path.hasPrefix("/store/") { _ = try? Key(percentEncoded: request.path.dropFirst(7)) }
            if let range = request.headers["Range"] { _ = ByteRange.parse(range, size: size) }
            _ = request.headers.listValues("Connection")
        }
        _ = try? MessageHeadParser.parseResponse(head)
    }
    _ = try? MessageBody.parseChunkSize(Array(bytes.prefix(64)))
    _ = PercentEncoding.decode(bytes)
    return 0
}
