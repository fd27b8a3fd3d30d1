import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createServer } from 'node:net'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { type ChaosRelay, startChaosRelay } from '../../test/helpers/chaos-relay.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { generateFleetKey } from '../fleet-key.js'
import { PeerDialer } from '../peer-dialer.js'
import { newCounters } from '../stats.js'
import { startBareLibp2p } from './fleet-harness.js'

/** A port nothing listens on: dials to it are refused at once, as to a peer across a partition that resets. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

async function unreachablePeer(): Promise<{ peerId: string; addr: string }> {
  const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  return { peerId, addr: `/ip4/127.0.0.1/tcp/${await closedPort()}` }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('peer dialer: redials of unreachable peers share one budget', () => {
  const fleetKey = generateFleetKey()
  const cleanup: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c()
  })

  /** A started node whose dialer knows `unreachable` peers that refuse every dial. */
  async function dialerWithUnreachable(unreachable: number, redialsPerSecond: number) {
    const node = await startBareLibp2p(fleetKey, 'test')
    cleanup.push(() => node.stop())
    const counters = newCounters()
    const dialer = new PeerDialer(node, pino({ level: 'silent' }), counters, {
      // fast backoff so that, without the budget, ten peers would be redialled ~100 times a second
      tickMs: 20, minBackoffMs: 50, maxBackoffMs: 100, maxPeers: 32, dialTimeoutMs: 2_000, answerWaitMs: 0, redialsPerSecond,
    })
    cleanup.push(() => dialer.stop())
    dialer.start([])
    for (let i = 0; i < unreachable; i++) {
      const p = await unreachablePeer()
      dialer.learn(`n${i}`, p.peerId, [p.addr])
    }
    return { node, dialer, counters }
  }

  it('redials ten unreachable peers at the budget, not at each one\'s backoff', async () => {
    const { counters } = await dialerWithUnreachable(10, 4)
    await waitFor(() => counters.dialFailures >= 10 || undefined, { timeoutMs: 5_000, what: 'the first dial of every peer' })
    const first = counters.dialFailures
    await sleep(2_000)
    const redials = counters.dialFailures - first
    // 4 a second for 2 s, plus a full bucket (4) and one tick's refill; each peer's backoff alone would allow ~250
    expect(redials).toBeGreaterThanOrEqual(6)
    expect(redials).toBeLessThanOrEqual(13)
  })

  it('redials up to three unreachable peers each on its own backoff (a node down, a small partition)', async () => {
    const { counters } = await dialerWithUnreachable(3, 1)
    await waitFor(() => counters.dialFailures >= 3 || undefined, { timeoutMs: 5_000, what: 'the first dial of every peer' })
    const first = counters.dialFailures
    await sleep(1_000)
    // backoff 50–100 ms: each peer ~10 times a second; the budget of 1 a second would allow 2
    expect(counters.dialFailures - first).toBeGreaterThanOrEqual(12)
  })

  it('still brings back a peer behind a healed cut while nine others stay unreachable', async () => {
    const peer = await startBareLibp2p(fleetKey, 'test')
    cleanup.push(() => peer.stop())
    const port = Number(/\/tcp\/(\d+)/.exec(peer.getMultiaddrs()[0].toString())?.[1])
    const relay: ChaosRelay = await startChaosRelay({ target: { host: '127.0.0.1', port }, rules: { mode: 'refuse' } })
    cleanup.push(() => relay.close())
    const { node, dialer, counters } = await dialerWithUnreachable(9, 4)
    dialer.learn('behind-the-cut', peer.peerId.toString(), [relay.multiaddr()])
    await waitFor(() => counters.dialFailures >= 20 || undefined, { timeoutMs: 10_000, what: 'every peer failing more than once' })
    expect(node.getPeers()).toHaveLength(0)

    const healedAt = performance.now()
    relay.reset()
    await waitFor(() => node.getPeers().some((p) => p.equals(peer.peerId)) || undefined, { timeoutMs: 6_000, what: 'the healed peer connected' })
    // ten failing peers share 4 redials a second, longest-waiting first: every one gets a turn within ~2.5 s
    expect(performance.now() - healedAt).toBeLessThan(4_000)
  })
})
