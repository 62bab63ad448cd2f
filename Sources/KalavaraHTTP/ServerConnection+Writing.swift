import KalavaraSupport

/// How an answer goes on the wire: head and small body in one write, a file by sendfile,
/// a stream by splice or in pieces (chunked when its length is unknown).
extension ServerConnection {
    /// Writes a response; returns the bytes written, or nil if the client could not take it.
    @discardableResult
    func send(_ response: HTTPResponse, isHead: Bool, keepAlive: Bool) -> Int? {
        var head = response.serializedHead(keepAlive: keepAlive)
        do {
            if isHead || response.forbidsBody {
                try socket.write(head)
                return head.count
            }
            switch response.body {
            case .empty:
                try socket.write(head)
                return head.count
            case .bytes(let bytes):
                head.append(contentsOf: bytes) // one write, one packet for small answers
                try socket.write(head)
                return head.count
            case .file(let file, let offset, let count):
                try socket.write(head, more: true)
                try socket.sendFile(file.fd, offset: offset, count: count)
                return head.count + count
            case .stream(let stream):
                if let splice = stream.splice, let count = stream.count, splice.prefix.count <= count {
                    let rest = count - splice.prefix.count
                    try socket.write(head + splice.prefix, more: rest > 0)
                    if rest > 0 { try socket.spliceIn(from: splice.fd, count: rest) }
                    return head.count + count
                }
                try socket.write(head, more: true)
                var sent = 0
                guard let count = stream.count else {
                    try stream.produce { piece in
                        guard piece.count > 0 else { return }
                        try socket.write(Array((String(piece.count, radix: 16) + "\r\n").utf8), more: true)
                        try socket.write(piece, more: true)
                        try socket.write([ASCII.cr, ASCII.lf])
                        sent += piece.count
                    }
                    try socket.write(Array("0\r\n\r\n".utf8))
                    return head.count + sent
                }
                try stream.produce { piece in
                    guard sent + piece.count <= count else { throw ConnectionError.closedByPeer }
                    try socket.write(piece)
                    sent += piece.count
                }
                guard sent == count else { return nil } // cut short: the connection must close
                return head.count + sent
            }
        } catch {
            return nil
        }
    }
}
