import { generateKeyPair } from '@libp2p/crypto/keys'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pino, { type Logger } from 'pino'
import { afterEach, beforeEach } from 'vitest'
import { openCatalog } from '../../catalog/index.js'
import type { Catalog } from '../../catalog/catalog-api.js'
import type { CatalogEvent } from '../../schemas/catalog-events.js'
import { type ChaosRelay, startChaosRelay } from '../../test/helpers/chaos-relay.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { generateFleetKey } from '../fleet-key.js'
import { gossipNode, type GossipNode, type GossipNodeInit } from '../gossip-node.js'
import { HandshakeWatch } from '../handshake-watch.js'
import { createGossipLibp2p, type GossipLibp2p } from '../libp2p-node.js'

/**
 * Real nodes in one test process: a LevelDB catalog in a temp dir and a libp2p gossip node on 127.0.0.1
 * port 0 each. `relayed: true` gives a node its own 127.0.0.x to dial from and a chaos relay in front of its
 * listener, which is the only address it announces, so every connection to it crosses the relay.
 */
export interface LogLine { level: number; msg: string; [key: string]: unknown }

export function captureLogger(name: string): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as LogLine)
      done()
    },
  })
  return { log: pino({ level: process.env.GOSSIP_TEST_LOG ?? 'info', base: { node: name } }, sink), lines }
}

export interface StartOptions {
  name: string
  region?: string
  /** Bootstrap through these nodes (their announced addresses), or raw multiaddrs. */
  bootstrap?: Array<TestNode | string>
  /** `null`: start without a fleet key. Default: the fleet's key. */
  fleetKey?: Uint8Array | null
  relayed?: boolean
  init?: Partial<GossipNodeInit>
}

export interface TestNode {
  readonly name: string
  readonly dataDir: string
  readonly catalog: Catalog
  readonly gossip: GossipNode
  readonly logs: LogLine[]
  readonly events: CatalogEvent[]
  /** Own 127.x address (relayed nodes). */
  readonly ip: string | undefined
  readonly relay: ChaosRelay | undefined
  /** What peers dial: the relay's address for relayed nodes. */
  readonly address: string
  readonly options: StartOptions
}

export class TestFleet {
  readonly nodes = new Map<string, TestNode>()
  private readonly relays = new Map<string, ChaosRelay>()
  private nextIp = 11

  private _dir = ''
  private _fleetKey: Uint8Array = new Uint8Array()

  get dir(): string { return this._dir }
  get fleetKey(): Uint8Array { return this._fleetKey }

  /** A fresh dir and key (after `stopAll`): how `useTestFleet` starts each test with the same object. */
  reset(dir: string, fleetKey: Uint8Array): void {
    if (this.nodes.size > 0) throw new Error('reset a test fleet only after stopAll')
    this._dir = dir
    this._fleetKey = fleetKey
    this.nextIp = 11
  }

  node(name: string): TestNode {
    const n = this.nodes.get(name)
    if (n === undefined) throw new Error(`no test node ${name}`)
    return n
  }

  async start(o: StartOptions): Promise<TestNode> {
    const dataDir = join(this.dir, o.name)
    const { log, lines } = captureLogger(o.name)
    const previous = this.nodes.get(o.name)
    const ip = o.relayed === true ? previous?.ip ?? `127.0.0.${this.nextIp++}` : undefined
    const catalog = await openCatalog({ dataDir, nodeName: o.name, logger: log.child({ component: 'catalog' }), sync: false })
    const events: CatalogEvent[] = []
    catalog.subscribe({ fromSeq: catalog.lastSeq + 1 }, (e) => events.push(e))
    const bootstrap = (o.bootstrap ?? []).map((b) => (typeof b === 'string' ? b : b.address))
    const fleetKey = o.fleetKey === null ? undefined : o.fleetKey ?? this.fleetKey
    // a relayed node announces its relay; the relay learns the real port once the node listens
    const relay = o.relayed === true
      ? this.relays.get(o.name) ?? await startChaosRelay({ target: { host: ip!, port: 1 }, seed: this.nextIp * 7919 })
      : undefined
    if (relay !== undefined) this.relays.set(o.name, relay)
    const gossip = gossipNode({
      listen: [`/ip4/${ip ?? '127.0.0.1'}/tcp/0`],
      bootstrap,
      fleetKey,
      dataDir,
      self: { region: o.region ?? 'ams', roles: ['edge', 'worker'], version: 'test' },
      ipColocationFactorWeight: 0,
      ...(relay === undefined ? {} : { announce: [relay.multiaddr()], dialFrom: ip }),
      ...o.init,
    })({ catalog, log: log.child({ component: 'gossip' }) })
    try {
      await gossip.start()
    } catch (err) {
      await catalog.close()
      throw err
    }
    if (relay !== undefined) relay.setTarget({ host: ip!, port: listenPort(gossip) })
    const address = relay !== undefined ? `${relay.multiaddr()}/p2p/${gossip.peerId}` : gossip.multiaddrs()[0] ?? ''
    const node: TestNode = { name: o.name, dataDir, catalog, gossip, logs: lines, events, ip, relay, address, options: o }
    this.nodes.set(o.name, node)
    return node
  }

  /** Graceful stop (the node marks itself left); its data dir stays for a restart. */
  async stop(name: string): Promise<void> {
    const n = this.node(name)
    await n.gossip.stop()
    await n.catalog.close()
  }

  async restart(name: string, changes: Partial<StartOptions> = {}): Promise<TestNode> {
    return await this.start({ ...this.node(name).options, ...changes })
  }

  async stopAll(): Promise<void> {
    const stops = [...this.nodes.keys()].map(async (name) => {
      const n = this.nodes.get(name)!
      try { await n.gossip.stop() } finally { await n.catalog.close() }
    })
    await Promise.allSettled(stops)
    await Promise.allSettled([...this.relays.values()].map((r) => r.close()))
    this.nodes.clear()
    this.relays.clear()
  }
}

/**
 * One fleet per test in a fresh temp dir with a fresh fleet key, stopped and removed after the test.
 * Call at the top of a test file; the returned fleet object stays the same across tests.
 */
export function useTestFleet(): TestFleet {
  const fleet = new TestFleet()
  let remove: (() => Promise<void>) | undefined
  beforeEach(async () => {
    const dir = await tempDir('edgeproxy-gossip-')
    remove = dir.remove
    fleet.reset(dir.path, generateFleetKey())
  })
  afterEach(async () => {
    await fleet.stopAll()
    await remove?.()
  })
  return fleet
}

/** Relayed nodes bootstrapped from the first, each connected to all others before this returns. */
export async function startRelayedFleet(fleet: TestFleet, names: string[], init?: Partial<GossipNodeInit>): Promise<TestNode[]> {
  const first = await fleet.start({ name: names[0], relayed: true, init })
  const nodes = [first]
  for (const name of names.slice(1)) nodes.push(await fleet.start({ name, relayed: true, bootstrap: [first], init }))
  await waitForMesh(nodes, names.length - 1)
  return nodes
}

/**
 * Cuts every link between the two groups at the relays in front of each (relayed) node — links within a group
 * stay — and waits until no node of one group is connected to one of the other.
 */
export async function partition(left: TestNode[], right: TestNode[]): Promise<void> {
  for (const n of left) n.relay!.set({ mode: 'refuse' }, { from: right.map((r) => r.ip!) })
  for (const n of right) n.relay!.set({ mode: 'refuse' }, { from: left.map((l) => l.ip!) })
  await waitFor(() => left.every((l) => right.every((r) => !l.gossip.connectedPeers().includes(r.gossip.peerId) && !r.gossip.connectedPeers().includes(l.gossip.peerId))), { what: 'the groups disconnected' })
}

export function heal(nodes: TestNode[]): void {
  for (const n of nodes) n.relay!.reset()
}

function listenPort(g: GossipNode): number {
  const port = Number(g.listenAddrs()[0]?.split('/tcp/')[1]?.split('/')[0])
  if (!Number.isInteger(port) || port <= 0) throw new Error(`no listen port in ${g.listenAddrs().join(', ')}`)
  return port
}

export function headsOf(n: TestNode): string {
  return JSON.stringify([...n.catalog.digest()].sort(([a], [b]) => a.localeCompare(b)))
}

export async function waitForConvergence(nodes: TestNode[], timeoutMs = 10_000): Promise<void> {
  await waitFor(() => {
    const first = headsOf(nodes[0])
    return nodes.every((n) => headsOf(n) === first)
  }, { timeoutMs, what: `identical heads on ${nodes.map((n) => n.name).join(', ')}` })
}

/** Every node is connected to at least `min` peers and has a gossipsub mesh for changes. */
export async function waitForMesh(nodes: TestNode[], min = 1, timeoutMs = 10_000): Promise<void> {
  await waitFor(() => nodes.every((n) => {
    const s = n.gossip.stats()
    return s.peers >= min && s.meshPeers >= 1
  }), { timeoutMs, what: 'a connected mesh' })
}

export async function waitForLog(n: TestNode, pattern: RegExp, timeoutMs = 5_000): Promise<LogLine> {
  return await waitFor(() => n.logs.find((l) => pattern.test(l.msg)), { timeoutMs, what: `log /${pattern.source}/ on ${n.name}` })
}

export async function waitForEvent(n: TestNode, match: (e: CatalogEvent) => boolean, timeoutMs = 5_000): Promise<CatalogEvent> {
  return await waitFor(() => n.events.find(match), { timeoutMs, what: `a matching catalog event on ${n.name}` })
}

/**
 * A started bare libp2p node with the fleet's transport stack (key, Noise, Yamux, gossipsub on `topics`) and none
 * of gossip's logic: a member gone bad, or one end of a protocol test. The caller stops it.
 */
export async function startBareLibp2p(fleetKey: Uint8Array, version: string, topics: string[] = []): Promise<GossipLibp2p> {
  const node = await createGossipLibp2p({
    privateKey: await generateKeyPair('Ed25519'), fleetKey, listen: ['/ip4/127.0.0.1/tcp/0'],
    topics, ipColocationFactorWeight: 0, signing: 'none', acceptPXThreshold: 0,
    maxConnections: 16, dialTimeoutMs: 5000, maxRpcBytes: 4 * 1024 * 1024, handshakes: new HandshakeWatch(() => {}), version,
  })
  await node.start()
  return node
}
