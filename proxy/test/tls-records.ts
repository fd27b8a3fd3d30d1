/**
 * The same TLS handshake message re-cut into records of at most `size` bytes (the record header repeated);
 * whatever followed the first record in `hello` follows unchanged. Parsers must take a ClientHello spread
 * over several records (RFC 8446 §5.1).
 */
export function refragment(hello: Buffer, size: number): Buffer {
  const message = hello.subarray(5, 5 + hello.readUInt16BE(3))
  const records: Buffer[] = []
  for (let at = 0; at < message.length; at += size) {
    const part = message.subarray(at, at + size)
    records.push(Buffer.from([0x16, hello[1], hello[2], part.length >> 8, part.length & 0xff]), part)
  }
  return Buffer.concat([...records, hello.subarray(5 + message.length)])
}
