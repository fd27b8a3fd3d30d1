import { type ChildProcess, fork } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { type ChaosRelay, startChaosRelay } from '../test/helpers/chaos-relay.js'
import { DAEMON_NODE_FLAGS } from '../tools/node-flags.js'
import type { FromChild, GossipChildConfig, ToChild } from './gossip-child.js'

/**
 * The benchmark's fleet: N child processes on loopback, each with its own 127.0.0.x; optionally a chaos relay
 * in front of each (the only address it announces) so that the fleet can be partitioned.
 */
export interface FleetOptions {
  dir: string
  fleetKeyPath: string
  nodes: number
  relayed: boolean
  fsync: boolean
  onMessage?: (node: BenchNode, m: FromChild) => void
  /** The child to spawn (default `gossip-child`: a daemon-like node); every one speaks gossip-child.ts's IPC. */
  script?: 'gossip-child' | 'gossip-raw-child'
  /** Merged into each child's config (e.g. the raw child's payload size). */
  childConfig?: Record<string, unknown>
  /** Once all are up, tell each node to dial every earlier one: for a child without its own peer discovery. */
  dialEarlier?: boolean
}

type Stats = Extract<FromChild, { type: 'stats' }>

export class BenchNode {
  private nextId = 1
  private readonly waiting = new Map<number, (m: FromChild) => void>()
  peerId = ''
  address = ''

  constructor(readonly name: string, readonly ip: string, readonly child: ChildProcess, readonly relay: ChaosRelay | undefined) {}

  send(m: ToChild): void { this.child.send(m) }

  /** Resolves the answer that carries this request's id. */
  async ask<T extends FromChild>(m: { type: 'digest' | 'stats' } | { type: 'profile'; ms: number; file: string }, timeoutMs = 10_000): Promise<T> {
    const id = this.nextId++
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiting.delete(id); reject(new Error(`${this.name} did not answer ${m.type} within ${timeoutMs} ms (exit code ${this.child.exitCode}, signal ${this.child.signalCode})`)) }, timeoutMs)
      this.waiting.set(id, (reply) => { clearTimeout(timer); resolve(reply as T) })
      this.send({ ...m, id })
    })
  }

  answer(m: FromChild): boolean {
    if (!('id' in m)) return false
    const w = this.waiting.get(m.id)
    this.waiting.delete(m.id)
    w?.(m)
    return w !== undefined
  }

  async stats(): Promise<Stats> { return await this.ask<Stats>({ type: 'stats' }) }
  async digest(): Promise<string> { return (await this.digestState()).hash }
  async digestState(): Promise<DigestState> { return await this.ask<DigestState>({ type: 'digest' }) }
}

/** Both fleets, ours and the raw baseline, run with the daemon's node flags. */
function childEntry(script: string): { file: string; execArgv: string[] } {
  const js = join(import.meta.dirname, `${script}.js`)
  if (existsSync(js)) return { file: js, execArgv: [...DAEMON_NODE_FLAGS, ...(process.env.BENCH_GOSSIP_PROF === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_GOSSIP_PROF}`])] }
  return { file: join(import.meta.dirname, `${script}.ts`), execArgv: [...DAEMON_NODE_FLAGS, '--import', 'tsx'] } // run from source
}

export async function startFleet(o: FleetOptions): Promise<BenchNode[]> {
  const nodes: BenchNode[] = []
  const start = async (i: number, bootstrap: string[]): Promise<BenchNode> => {
    const name = `n${String(i + 1).padStart(2, '0')}`
    const ip = `127.0.0.${20 + i}`
    const relay = o.relayed ? await startChaosRelay({ target: { host: ip, port: 1 }, seed: i + 1 }) : undefined
    const cfg: GossipChildConfig = {
      name, dataDir: join(o.dir, name), fleetKeyPath: o.fleetKeyPath, ip, bootstrap, fsync: o.fsync,
      ...(relay === undefined ? {} : { announce: relay.multiaddr() }),
      ...o.childConfig,
    }
    const { file, execArgv } = childEntry(o.script ?? 'gossip-child')
    const child = fork(file, [JSON.stringify(cfg)], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const node = new BenchNode(name, ip, child, relay)
    nodes.push(node)
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not start within 60 s`)), 60_000)
      child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${name} exited with ${code} before it was ready`)) })
      child.on('message', (m: FromChild) => {
        if (m.type === 'ready') {
          clearTimeout(timer)
          node.peerId = m.peerId
          const port = Number(m.listen[0]?.split('/tcp/')[1]?.split('/')[0])
          relay?.setTarget({ host: ip, port })
          node.address = relay === undefined ? m.addrs[0] : `${relay.multiaddr()}/p2p/${m.peerId}`
          resolve()
        } else if (!node.answer(m)) {
          o.onMessage?.(node, m)
        }
      })
    })
    child.removeAllListeners('exit')
    return node
  }
  try {
    const seed = await start(0, [])
    // the others start together, as a fleet rebooting would (CPU-bound: 10–17 s for 19 on 2 cores)
    await Promise.all(Array.from({ length: o.nodes - 1 }, async (_, k) => { await start(k + 1, [seed.address]) }))
    nodes.sort((a, b) => a.name.localeCompare(b.name)) // spawn order varies (relays start first): keep n01… order
    if (o.dialEarlier === true) nodes.forEach((n, i) => { n.send({ type: 'dial', addrs: nodes.slice(0, i).map((e) => e.address) }) })
  } catch (err) {
    await stopFleet(nodes)
    throw err
  }
  return nodes
}

export async function stopFleet(nodes: BenchNode[]): Promise<void> {
  await Promise.all(nodes.map(async (n) => {
    if (n.child.exitCode === null) {
      const exited = new Promise((resolve) => n.child.once('exit', resolve))
      n.send({ type: 'stop' })
      const timer = setTimeout(() => n.child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
    await n.relay?.close()
  }))
}

/** Polls until every node has at least `minMeshPeers` gossipsub mesh peers on the changes topic; returns the ms it took. */
export async function untilMeshed(nodes: BenchNode[], minMeshPeers: number, timeoutMs: number): Promise<number> {
  const started = performance.now()
  for (;;) {
    const stats = await Promise.all(nodes.map((n) => n.stats()))
    if (stats.every((s) => s.meshPeers >= minMeshPeers)) return performance.now() - started
    if (performance.now() - started > timeoutMs) {
      throw new Error(`not every node had ${minMeshPeers} mesh peers within ${timeoutMs} ms (mesh peers: ${stats.map((s) => s.meshPeers).join(' ')})`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

type DigestState = Extract<FromChild, { type: 'digest' }>

/**
 * Polls until every node reports the same digest hash; returns what they reported. Every 50 ms: the polling of 20
 * children competes for the same two cores as the fleet it measures.
 */
async function pollUntilEqual(nodes: BenchNode[], started: number, timeoutMs: number): Promise<DigestState[]> {
  for (;;) {
    const states = await Promise.all(nodes.map((n) => n.digestState()))
    if (states.every((s) => s.hash === states[0].hash)) return states
    if (Date.now() - started > timeoutMs) throw new Error(`no convergence within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Polls until every node holds the same digest; returns the ms that took. */
export async function untilConverged(nodes: BenchNode[], timeoutMs: number): Promise<number> {
  const started = Date.now()
  await pollUntilEqual(nodes, started, timeoutMs)
  return Date.now() - started
}

/**
 * A heal's time: from `since` (epoch ms) until the last node came to hold what all hold now, read from each node's
 * own clock (`changedAt`), once polling finds every node equal. The poll's own lag is no part of it: in a 20-process
 * heal on two cores a round of polls took up to 4 s, as long as the slowest event loop took to answer, and the
 * first poll to see the fleet level came that much after it was (`polledMs` keeps that time, for comparison).
 */
export async function untilLevel(nodes: BenchNode[], since: number, timeoutMs: number): Promise<{ levelMs: number; polledMs: number }> {
  const states = await pollUntilEqual(nodes, since, timeoutMs)
  const polledMs = Date.now() - since
  const changedAt = states.map((s) => s.changedAt ?? NaN)
  if (changedAt.some((t) => Number.isNaN(t))) throw new Error('untilLevel needs nodes that report since when they hold their digest')
  return { levelMs: Math.max(0, ...changedAt.map((t) => t - since)), polledMs }
}
