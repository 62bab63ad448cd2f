/// Every limit the HTTP layer enforces, named once, with the reason for its value.
enum HTTPLimits {
    /// The request line plus all header lines. Larger heads are refused with `431`. 64 KiB is
    /// far beyond any honest client (nginx's default is 8 KiB lines, 32 KiB in all) while
    /// still bounding what one connection can make the server hold in memory.
    static let maxHeadBytes = 64 * 1024
    /// Header lines in one message. Past this we answer `431`: parsing cost stays linear and
    /// small even for a head full of one-byte headers.
    static let maxHeaderCount = 100
    /// A chunk-size line (hex size and extensions). Real clients send a few bytes; the bound
    /// stops a client from streaming an endless extension.
    static let maxChunkLineBytes = 4 * 1024
    /// Trailer section of a chunked body: tolerated, ignored, and bounded like a head.
    static let maxTrailerBytes = 64 * 1024
    /// When a handler answers without reading the whole body (a redirect, an error), the
    /// server reads and discards up to this much so the connection can be kept; a longer
    /// body is not worth receiving and the connection is closed instead.
    static let maxDrainBytes = 256 * 1024
    /// The per-connection read buffer. It holds one whole head, so it must exceed
    /// `maxHeadBytes`; body bytes go straight to the handler's own buffer.
    static let readBufferBytes = maxHeadBytes + 4 * 1024
}
