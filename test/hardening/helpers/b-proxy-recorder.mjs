// A Machine that is a strict PROXY-protocol receiver, to the letter of the spec (haproxy.org/download/2.9/doc/
// proxy-protocol.txt): a v1 line is read from at most 107 bytes and must match the grammar exactly; a v2
// header needs the 12-byte signature, version 2, command LOCAL or PROXY, a known family and transport and
// a length that covers its addresses. Anything else: the connection is dropped without a byte of answer
// (real receivers such as HAProxy and nginx are laxer about a long v1 line — this one is not).
// After a good header it reads the client's payload up to "\n" and answers one JSON line:
//   {version, headerLength, headerHex, src, srcPort, dst, dstPort, payload}
// Every connection (accepted or rejected) is appended as a JSON line to the file in argv[2].
// Usage: node b-proxy-recorder.mjs LOGFILE PORT [PORT…]; binds FLY_PRIVATE_IP.
import { appendFileSync } from 'node:fs'
import { createServer, isIPv4, isIPv6 } from 'node:net'

const [logFile, ...ports] = process.argv.slice(2)
const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')
const V1_MAX = 107
const record = (entry) => appendFileSync(logFile, `${JSON.stringify(entry)}\n`)

/** undefined: need more bytes; {error}; or the parsed header and its length. */
function parse(buf) {
  if (buf.length === 0) return undefined
  if (buf[0] === 0x0d) {
    if (buf.length < 16) return SIG.subarray(0, buf.length).equals(buf) ? undefined : { error: 'bad v2 signature' }
    if (!buf.subarray(0, 12).equals(SIG)) return { error: 'bad v2 signature' }
    const ver = buf[12] >> 4
    const cmd = buf[12] & 0x0f
    if (ver !== 2) return { error: `v2 version nibble ${ver}` }
    if (cmd > 1) return { error: `v2 command ${cmd}` }
    const fam = buf[13]
    const len = buf.readUInt16BE(14)
    const need = { 0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216 }[fam]
    if (need === undefined) return { error: `v2 family/transport 0x${fam.toString(16)}` }
    if (len < need) return { error: `v2 length ${len} shorter than the 0x${fam.toString(16)} addresses` }
    if (len > 2048) return { error: `v2 length ${len} beyond any real header` }
    if (buf.length < 16 + len) return undefined
    const a = buf.subarray(16)
    if (cmd === 0 || fam === 0x00) return { version: 2, length: 16 + len }
    if (fam >> 4 === 1) {
      return { version: 2, length: 16 + len, src: [...a.subarray(0, 4)].join('.'), dst: [...a.subarray(4, 8)].join('.'), srcPort: a.readUInt16BE(8), dstPort: a.readUInt16BE(10) }
    }
    if (fam >> 4 === 2) {
      const v6 = (b) => Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(':')
      return { version: 2, length: 16 + len, src: v6(a.subarray(0, 16)), dst: v6(a.subarray(16, 32)), srcPort: a.readUInt16BE(32), dstPort: a.readUInt16BE(34) }
    }
    return { version: 2, length: 16 + len }
  }
  const text = buf.subarray(0, V1_MAX).toString('latin1')
  if (!'PROXY '.startsWith(text.slice(0, 6)) && !text.startsWith('PROXY ')) return { error: 'neither v1 nor v2' }
  const end = text.indexOf('\r\n')
  if (end === -1) return buf.length >= V1_MAX ? { error: `v1 line not ended within ${V1_MAX} bytes` } : undefined
  const line = text.slice(0, end)
  if (line === 'PROXY UNKNOWN' || line.startsWith('PROXY UNKNOWN ')) return { version: 1, length: end + 2 }
  const m = /^PROXY (TCP4|TCP6) ([0-9a-fA-F:.]+) ([0-9a-fA-F:.]+) (0|[1-9]\d{0,4}) (0|[1-9]\d{0,4})$/.exec(line)
  if (m === null) return { error: `v1 line malformed: ${JSON.stringify(line)}` }
  const ok = m[1] === 'TCP4' ? isIPv4 : isIPv6
  if (!ok(m[2]) || !ok(m[3]) || Number(m[4]) > 65535 || Number(m[5]) > 65535) return { error: `v1 addresses invalid: ${JSON.stringify(line)}` }
  return { version: 1, length: end + 2, src: m[2], dst: m[3], srcPort: Number(m[4]), dstPort: Number(m[5]) }
}

const servers = ports.map((port) => {
  const server = createServer((socket) => {
    let buf = Buffer.alloc(0)
    let header
    const bail = (error) => { record({ port: Number(port), error }); socket.destroy() }
    const timer = setTimeout(() => bail('no complete header and payload within 10 s'), 10_000)
    socket.on('error', () => {})
    socket.on('close', () => clearTimeout(timer))
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk])
      if (header === undefined) {
        const h = parse(buf)
        if (h === undefined) return
        if (h.error !== undefined) { clearTimeout(timer); bail(h.error); return }
        header = { ...h, headerHex: buf.subarray(0, h.length).toString('hex') }
        buf = buf.subarray(h.length)
      }
      const nl = buf.indexOf(0x0a)
      if (nl === -1) return
      clearTimeout(timer)
      const entry = { port: Number(port), version: header.version, headerLength: header.length, headerHex: header.headerHex, src: header.src, srcPort: header.srcPort, dst: header.dst, dstPort: header.dstPort, payload: buf.subarray(0, nl + 1).toString('latin1') }
      record(entry)
      socket.end(`${JSON.stringify(entry)}\n`)
    })
  })
  server.listen(Number(port), process.env.FLY_PRIVATE_IP ?? '127.0.0.1')
  return server
})

const stop = () => {
  for (const s of servers) s.close()
  setTimeout(() => process.exit(0), 200).unref()
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
