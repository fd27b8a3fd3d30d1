import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer as createNetServer, connect, type Server, type Socket } from 'node:net'
import { afterEach, expect, test } from 'vitest'
import { machineAddress, startHarness, type Harness } from './harness.js'
import { startNginxMachine, type NginxMachine } from './nginx-machine.js'
import { run } from './tools.js'

let h: Harness | undefined
let nginx: NginxMachine | undefined
afterEach(async () => {
  await nginx?.stop()
  nginx = undefined
  await h?.stop()
  h = undefined
})

function tcpApp(internalPort: number, port: number, handlers: string, extra = ''): string {
  return `app = "tcp"\n[[services]]\ninternal_port = ${internalPort}\n[[services.ports]]\nport = ${port}\nhandlers = [${handlers}]\n${extra}`
}

const echo = (s: Socket): void => { s.pipe(s) }

test('raw TCP: bytes go both ways untouched and a half-close is passed on', async () => {
  h = await startHarness()
  const { port, machines } = await h.tcpMachines(1, echo)
  await h.deploy(tcpApp(port, 7000, ''))
  await h.addMachine('tcp', machines[0])
  const payload = randomBytes(2 * 1024 * 1024)
  const client = connect({ host: '127.0.0.1', port: h.port(7000), allowHalfOpen: true })
  const got: Buffer[] = []
  client.on('data', (c: Buffer) => got.push(c))
  await once(client, 'connect')
  client.end(payload) // FIN after the data: the echo Machine ends after echoing everything
  await once(client, 'end')
  const back = Buffer.concat(got)
  expect(back.length).toBe(payload.length)
  expect(createHash('sha256').update(back).digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'))
  client.destroy()
})

test('raw TCP: a slow client gets every byte of a large answer, in order', async () => {
  h = await startHarness()
  const answer = randomBytes(24 * 1024 * 1024)
  const { port, machines } = await h.tcpMachines(1, (s) => { s.end(answer) })
  await h.deploy(tcpApp(port, 7000, ''))
  await h.addMachine('tcp', machines[0])
  const client = connect({ host: '127.0.0.1', port: h.port(7000) })
  const hash = createHash('sha256')
  let got = 0
  let reads = 0
  // reads in short bursts with pauses, so the proxy's writes to it back up again and again
  client.on('data', (c: Buffer) => {
    hash.update(c)
    got += c.length
    if (++reads % 8 === 0) { client.pause(); setTimeout(() => client.resume(), 5) }
  })
  await once(client, 'end')
  expect(got).toBe(answer.length)
  expect(hash.digest('hex')).toBe(createHash('sha256').update(answer).digest('hex'))
  client.destroy()
})

test('tls without http: TLS is terminated and the plaintext stream reaches the Machine (openssl s_client)', async () => {
  h = await startHarness()
  const { port, machines } = await h.tcpMachines(1, (s) => {
    s.once('data', (d: Buffer) => s.end(`echo:${d.toString().trim()}\n`))
  })
  await h.deploy(tcpApp(port, 7443, '"tls"'))
  await h.addMachine('tcp', machines[0])
  const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${h.port(7443)}`, '-servername', 'tcp.localhost', '-quiet'], { input: 'mqtt-ish hello\n' })
  expect(r.stdout).toContain('echo:mqtt-ish hello')
})

test('proxy_proto v1 and v2: nginx on the Machine reads the real client address from the header', async () => {
  h = await startHarness()
  const addr = machineAddress()
  const probe: Server = createNetServer()
  probe.listen(0, addr)
  await once(probe, 'listening')
  const port = (probe.address() as { port: number }).port
  probe.close()
  nginx = await startNginxMachine(addr, port, `proxy_protocol;
    location / { return 200 "client=$proxy_protocol_addr:$proxy_protocol_port server=$proxy_protocol_server_addr:$proxy_protocol_server_port\\n"; }`)
  await h.deploy(`app = "tcp"
[[services]]
internal_port = ${port}
[[services.ports]]
port = 7001
handlers = ["proxy_proto"]
[[services.ports]]
port = 7002
handlers = ["proxy_proto"]
proxy_proto_options = { version = "v2" }
`)
  await h.addMachine('tcp', { addr, server: probe, requests: [] })
  for (const publicPort of [7001, 7002]) {
    const local = h.port(publicPort)
    const client = connect({ host: '127.0.0.1', port: local })
    await once(client, 'connect')
    const clientPort = client.localPort
    const chunks: Buffer[] = []
    client.on('data', (c: Buffer) => chunks.push(c))
    client.write('GET / HTTP/1.0\r\nHost: tcp\r\n\r\n')
    await once(client, 'close')
    const text = Buffer.concat(chunks).toString()
    expect(text).toMatch(/^HTTP\/1\.1 200/)
    expect(text).toContain(`client=127.0.0.1:${clientPort} server=127.0.0.1:${local}`)
  }
})

test('WebSocket: the Upgrade handshake and frames pass through both ways (undici WebSocket client)', async () => {
  h = await startHarness()
  const { port, machines } = await h.httpMachines(1)
  machines[0].server.on('upgrade', (req, socket: Socket) => {
    const key = req.headers['sec-websocket-key'] as string
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
    socket.on('data', (frame: Buffer) => {
      if ((frame[0] & 0x0f) === 0x8) { socket.end(Buffer.from([0x88, 0])); return } // close frame: close back
      // one small masked text frame from the client → the same text back, unmasked, upper-cased
      const len = frame[1] & 0x7f
      const mask = frame.subarray(2, 6)
      const text = Buffer.from(frame.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4])).toString().toUpperCase()
      socket.write(Buffer.concat([Buffer.from([0x81, text.length]), Buffer.from(text)]))
    })
  })
  // the client cannot set Host, so the app also answers to the address it dials
  await h.deploy(`app = "ws"\n[[services]]\ninternal_port = ${port}\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`, ['127.0.0.1'])
  await h.addMachine('ws', machines[0])
  const { WebSocket } = await import('undici')
  const ws = new WebSocket(`ws://127.0.0.1:${h.port(80)}/chat`)
  const reply = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no WebSocket reply within 5 s')), 5000)
    ws.onopen = () => ws.send('hello through the proxy')
    ws.onmessage = (e) => { clearTimeout(timer); resolve(String(e.data)) }
    ws.onerror = (e) => { clearTimeout(timer); reject(new Error(`websocket error: ${String((e as { message?: string }).message)}`)) }
  })
  expect(reply).toBe('HELLO THROUGH THE PROXY')
  const closed = new Promise((resolve) => { ws.onclose = resolve })
  ws.close()
  await closed
  expect(h.proxy.stats.upgrades).toBe(1)
})
