import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createServer, type Server } from 'node:net'
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

/** A random peer id; `above`: one larger than it (a peer this node dials, not one that dials this node). */
async function randomPeerId(above?: string): Promise<string> {
  for (;;) {
    const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    if (above === undefined || peerId > above) return peerId
  }
}

async function unreachablePeer(above?: string): Promise<{ peerId: string; addr: string }> {
  return { peerId: await randomPeerId(above), addr: `/ip4/127.0.0.1/tcp/${await closedPort()}` }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('peer dialer: redials of unreachable peers share one budget', () => {
  const fleetKey = generateFleetKey()
  const cleanup: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c()
  })

  /**
   * A started node with a started dialer that knows no peers yet. `fleetProbesPerSecond` defaults to no limit of its
   * own: the node then redials at `redialsPerSecond` while probing as well.
   */
  async function startDialer(redialsPerSecond: number, fleetProbesPerSecond = Infinity) {
    const node = await startBareLibp2p(fleetKey, 'test')
    cleanup.push(() => node.stop())
    const counters = newCounters()
    const dialer = new PeerDialer(node, pino({ level: 'silent' }), counters, {
      // fast backoff so that, without the budget, ten peers would be redialled ~100 times a second
      tickMs: 20, minBackoffMs: 50, maxBackoffMs: 100, maxPeers: 32, dialTimeoutMs: 2_000, answerWaitMs: 0, redialsPerSecond, fleetProbesPerSecond,
    })
    cleanup.push(() => dialer.stop())
    dialer.start([])
    return { node, dialer, counters }
  }

  /** A started node whose dialer knows `unreachable` peers that refuse every dial (`ours`: all of them peers it dials). */
  async function dialerWithUnreachable(unreachable: number, redialsPerSecond: number, ours = false, fleetProbesPerSecond = Infinity) {
    const { node, dialer, counters } = await startDialer(redialsPerSecond, fleetProbesPerSecond)
    for (let i = 0; i < unreachable; i++) {
      const p = await unreachablePeer(ours ? node.peerId.toString() : undefined)
      dialer.learn(`n${i}`, p.peerId, [p.addr])
    }
    return { node, dialer, counters }
  }

  it('redials ten unreachable peers at the budget, not at each one\'s backoff', async () => {
    // all ten are this node's to dial: with random ids, about one run in eleven drew none, and peers that should
    // dial this node are redialled from a far smaller share (the test below)
    const { counters } = await dialerWithUnreachable(10, 4, true)
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

  /** A bare peer (it dials no one) behind a relay that refuses until the cut heals; `above`: its id is larger. */
  async function peerBehindCut(above: string | undefined, below: string | undefined) {
    for (;;) {
      const peer = await startBareLibp2p(fleetKey, 'test')
      const id = peer.peerId.toString()
      if ((above !== undefined && id <= above) || (below !== undefined && id >= below)) { await peer.stop(); continue }
      cleanup.push(() => peer.stop())
      const port = Number(/\/tcp\/(\d+)/.exec(peer.getMultiaddrs()[0].toString())?.[1])
      const relay: ChaosRelay = await startChaosRelay({ target: { host: '127.0.0.1', port }, rules: { mode: 'refuse' } })
      cleanup.push(() => relay.close())
      return { peer, relay }
    }
  }

  async function healAndWait(node: Awaited<ReturnType<typeof startBareLibp2p>>, cut: Awaited<ReturnType<typeof peerBehindCut>>): Promise<number> {
    expect(node.getPeers()).toHaveLength(0)
    const healedAt = performance.now()
    cut.relay.reset()
    await waitFor(() => node.getPeers().some((p) => p.equals(cut.peer.peerId)) || undefined, { timeoutMs: 8_000, what: 'the healed peer connected' })
    return performance.now() - healedAt
  }

  it('still brings back a peer it dials behind a healed cut while nine others stay unreachable', async () => {
    const { node, dialer, counters } = await dialerWithUnreachable(9, 4)
    const cut = await peerBehindCut(node.peerId.toString(), undefined)
    dialer.learn('behind-the-cut', cut.peer.peerId.toString(), [cut.relay.multiaddr()])
    await waitFor(() => counters.dialFailures >= 20 || undefined, { timeoutMs: 10_000, what: 'every peer failing more than once' })
    // up to ten failing peers this node dials share 4 redials a second, longest-waiting first: each gets a turn within ~2.5 s
    expect(await healAndWait(node, cut)).toBeLessThan(4_000)
  })

  it('still brings back a peer that should dial it but cannot (one-way reachability), from its smaller share of the budget', async () => {
    const { node, dialer, counters } = await dialerWithUnreachable(9, 4, true)
    const cut = await peerBehindCut(undefined, node.peerId.toString())
    dialer.learn('behind-the-cut', cut.peer.peerId.toString(), [cut.relay.multiaddr()])
    await waitFor(() => counters.dialFailures >= 20 || undefined, { timeoutMs: 10_000, what: 'every peer failing more than once' })
    // the nine take the budget; the peer that should dial this node has 4 / 8 redials a second of its own
    expect(await healAndWait(node, cut)).toBeLessThan(5_000)
  })

  it('pauses the other redials for a moment when one peer behind a healed cut comes back, then resumes them', async () => {
    const { node, dialer, counters } = await dialerWithUnreachable(9, 4, true)
    const cut = await peerBehindCut(node.peerId.toString(), undefined)
    dialer.learn('behind-the-cut', cut.peer.peerId.toString(), [cut.relay.multiaddr()])
    await waitFor(() => counters.dialFailures >= 20 || undefined, { timeoutMs: 10_000, what: 'every peer failing more than once' })
    await healAndWait(node, cut)
    // a dial started just before the return may still fail; after that the nine wait 2.5 s (4 a second before)
    await sleep(300)
    const paused = counters.dialFailures
    await sleep(1_800)
    expect(counters.dialFailures - paused).toBe(0)
    expect(counters.redialPauses).toBe(1)
    await waitFor(() => counters.dialFailures >= paused + 3 || undefined, { timeoutMs: 3_000, what: 'the redials resumed' })
  })

  it('probes at its share of the fleet\'s rate while cut off, redials at the full budget once a peer is back, and probes again when a link is lost', async () => {
    // twelve peers known, so a fleet of thirteen: 6.5 probes a second for the fleet are 0.5 a second for this node
    const { node, dialer, counters } = await dialerWithUnreachable(10, 4, true, 6.5)
    const cuts = [await peerBehindCut(node.peerId.toString(), undefined), await peerBehindCut(node.peerId.toString(), undefined)]
    for (const [i, cut] of cuts.entries()) dialer.learn(`behind-the-cut-${i}`, cut.peer.peerId.toString(), [cut.relay.multiaddr()])
    await waitFor(() => counters.dialFailures >= 12 || undefined, { timeoutMs: 5_000, what: 'the first dial of every peer' })
    const probing = async (): Promise<number> => {
      const before = counters.dialFailures
      await sleep(4_000)
      return counters.dialFailures - before
    }
    // 0.5 a second for 4 s and one in the bucket: 3; the full budget would have been 4 a second (~16)
    const probes = await probing()
    expect(probes).toBeGreaterThanOrEqual(1)
    expect(probes).toBeLessThanOrEqual(4)
    // the peers behind the cut find this node (the other side probes too): the pause, then the rest at 4 a second
    const connected = (cut: (typeof cuts)[number]): boolean => node.getPeers().some((p) => p.equals(cut.peer.peerId))
    for (const cut of cuts) {
      cut.relay.reset()
      await cut.peer.dial(node.getMultiaddrs(), { signal: AbortSignal.timeout(5_000) })
      await waitFor(() => connected(cut) || undefined, { timeoutMs: 5_000, what: 'a peer behind the cut connected' })
    }
    await sleep(300) // its tick has seen the returns
    expect(counters.redialPauses).toBe(1)
    await sleep(2_500)
    const restored = counters.dialFailures
    await sleep(2_000)
    expect(counters.dialFailures - restored).toBeGreaterThanOrEqual(6)
    // a link it had is lost (a new cut, perhaps): back to probing, whatever came back just before
    cuts[1].relay.set({ mode: 'refuse' })
    await node.hangUp(cuts[1].peer.peerId)
    await waitFor(() => !connected(cuts[1]) || undefined, { timeoutMs: 5_000, what: 'the lost link closed' })
    await sleep(500) // its first redial fails
    const probesAgain = await probing()
    expect(probesAgain).toBeGreaterThanOrEqual(1)
    expect(probesAgain).toBeLessThanOrEqual(4)
  })

  it('pauses once per heal: the peers that come back from the same cut after the pause do not pause the redials again', async () => {
    const { node, dialer, counters } = await startDialer(4)
    const cuts: Array<Awaited<ReturnType<typeof peerBehindCut>>> = []
    for (let i = 0; i < 6; i++) cuts.push(await peerBehindCut(node.peerId.toString(), undefined))
    for (const [i, cut] of cuts.entries()) dialer.learn(`behind-the-cut-${i}`, cut.peer.peerId.toString(), [cut.relay.multiaddr()])
    await waitFor(() => counters.dialFailures >= 20 || undefined, { timeoutMs: 10_000, what: 'every peer failing more than once' })
    for (const cut of cuts) cut.relay.reset()
    const back = (cut: (typeof cuts)[number]): boolean => node.getPeers().some((p) => p.equals(cut.peer.peerId))
    await waitFor(() => cuts.every(back) || undefined, { timeoutMs: 10_000, what: 'all six healed peers connected' })
    expect(counters.redialPauses).toBe(1)
  })

  it('spends the budget on peers this node should dial, not on the ones that dial it', async () => {
    const { node, dialer } = await startDialer(4)
    const self = node.peerId.toString()
    // unreachable peers that accept TCP and hang up at once, each counting the dials that reach it
    const peers: Array<{ peerId: string; dials: number; ours: boolean }> = []
    while (peers.filter((p) => p.ours).length < 4 || peers.filter((p) => !p.ours).length < 4) {
      const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
      const ours = peerId > self
      if (peers.filter((p) => p.ours === ours).length < 4) peers.push({ peerId, dials: 0, ours })
    }
    for (const [i, p] of peers.entries()) {
      const server: Server = createServer((socket) => { p.dials++; socket.destroy() })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
      dialer.learn(`n${i}`, p.peerId, [`/ip4/127.0.0.1/tcp/${(server.address() as { port: number }).port}`])
    }
    await waitFor(() => peers.every((p) => p.dials >= 1) || undefined, { timeoutMs: 5_000, what: 'the first dial of every peer' })
    const first = peers.map((p) => p.dials)
    await sleep(2_000)
    const redials = (ours: boolean): number => peers.reduce((n, p, i) => n + (p.ours === ours ? p.dials - first[i] : 0), 0)
    // the peers with a larger id are this node's to dial: they have the budget (4 a second); the others dial this
    // node, and are tried only in case reachability is one-way, from an eighth of it on top (one at once)
    expect(redials(true)).toBeGreaterThanOrEqual(6)
    expect(redials(false)).toBeLessThanOrEqual(2)
  })
})
