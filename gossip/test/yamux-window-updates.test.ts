import { lpStream } from '@libp2p/utils'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { afterEach, expect, test } from 'vitest'
import { type ChaosRelay, startChaosRelay } from '../../test/helpers/chaos-relay.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { generateFleetKey } from '../fleet-key.js'
import type { GossipLibp2p } from '../libp2p-node.js'
import { startBareLibp2p } from './fleet-harness.js'

/**
 * Two real gossip libp2p nodes (TCP, pnet, Noise, Yamux) with a relay between them that counts the bytes
 * each way: what the receiver of a stream sends back while data flows is yamux window updates.
 */
const PROTOCOL = '/edgeproxy/test-sink/1'
const fleetKey = generateFleetKey()
const closers: Array<() => Promise<void>> = []
afterEach(async () => { while (closers.length > 0) await closers.pop()!() })

/** A sender and a receiver of PROTOCOL; `target` reaches the receiver through the counting relay. */
async function pair(): Promise<{ sender: GossipLibp2p; target: Multiaddr; relay: ChaosRelay; received: () => number }> {
  const sender = await startBareLibp2p(fleetKey, 'test')
  const receiver = await startBareLibp2p(fleetKey, 'test')
  closers.push(async () => { await sender.stop() }, async () => { await receiver.stop() })
  let received = 0
  await receiver.handle(PROTOCOL, async (stream) => {
    const lp = lpStream(stream, { maxDataLength: 8 * 1024 * 1024 })
    try {
      for (;;) received += (await lp.read({ signal: AbortSignal.timeout(10_000) })).byteLength
    } catch { /* the sender closed the stream */ }
  })
  const port = Number(/\/tcp\/(\d+)/.exec(receiver.getMultiaddrs()[0].toString())?.[1])
  const relay = await startChaosRelay({ target: { host: '127.0.0.1', port } })
  closers.push(() => relay.close())
  return { sender, target: multiaddr(`${relay.multiaddr()}/p2p/${receiver.peerId.toString()}`), relay, received: () => received }
}

test('a receiver sends no window update per message: 500 small messages cost the sender no traffic back', async () => {
  const { sender, target, relay, received } = await pair()
  const stream = await sender.dialProtocol(target, PROTOCOL, { signal: AbortSignal.timeout(5000) })
  const lp = lpStream(stream)
  await lp.write(new Uint8Array(100))
  await waitFor(() => received() === 100, { timeoutMs: 5000, what: 'the first message' })
  // identify and the stream's opening are done; from here on, what comes back is flow control
  await new Promise((r) => setTimeout(r, 200))
  const back = relay.stats().bytesDown
  for (let i = 0; i < 500; i++) {
    await lp.write(new Uint8Array(100))
    await new Promise((r) => setImmediate(r)) // one yamux data frame per message, as gossip sends them
  }
  await waitFor(() => received() === 501 * 100, { timeoutMs: 10_000, what: 'all 500 messages received' })
  // one update per data frame would be 500 frames of ≥ 30 bytes (yamux header, Noise length and tag)
  expect(relay.stats().bytesDown - back).toBeLessThan(1000)
  await stream.close()
})

test('a transfer many times the 256 KiB receive window still completes: updates come once half the window is used', async () => {
  const { sender, target, relay, received } = await pair()
  const stream = await sender.dialProtocol(target, PROTOCOL, { signal: AbortSignal.timeout(5000) })
  const lp = lpStream(stream, { maxDataLength: 8 * 1024 * 1024 })
  const chunk = new Uint8Array(64 * 1024).fill(7)
  for (let i = 0; i < 64; i++) await lp.write(chunk, { signal: AbortSignal.timeout(10_000) })
  await waitFor(() => received() === 64 * chunk.byteLength, { timeoutMs: 10_000, what: '4 MiB received' })
  expect(relay.stats().bytesUp).toBeGreaterThan(4 * 1024 * 1024)
  await stream.close()
})
