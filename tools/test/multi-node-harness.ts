import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import type { MachineRecord, NodeRecord } from '../../schemas/catalog-records.js'
import { type ChaosRelay, startChaosRelay } from '../../test/helpers/chaos-relay.js'
import { type DaemonProcess, runCli, startDaemonProcess } from '../../test/helpers/cli.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'

/** The Machine the multi-node tests run on their workers (fixtures/fleet-machine.mjs). */
export const FLEET_MACHINE = join(import.meta.dirname, 'fixtures', 'fleet-machine.mjs')

/**
 * A fleet of real daemons as child processes (bin/edgeproxy.js) on 127.0.0.1 — one fleet key and CA, each
 * node with its own 127.0.x.y to dial gossip from, its own Machine range, and a chaos relay in front of its
 * gossip listener that is the only gossip address it announces. Round-trip times between regions are set
 * on those relays per pair, so gossip's closeness measures them as it would across the world.
 */
export interface FleetNode {
  readonly name: string
  readonly region: string
  readonly ip: string
  readonly roles: string
  readonly daemon: DaemonProcess
  readonly api: string
  readonly relay: ChaosRelay
  /** The port public port `p` is bound on (edges), from the daemon's log. */
  publicPort(p: number): Promise<number>
}

const PUBLIC_PORTS = [80, 443, 5432, 7000, 7001]

export class MultiNodeFleet {
  readonly nodes = new Map<string, FleetNode>()
  private readonly relays: ChaosRelay[] = []
  /** Every node's address and relay from the moment it is being started (nodes may start in parallel). */
  private readonly endpoints = new Map<string, { ip: string; relay: ChaosRelay }>()
  private readonly base: number
  private nextNode = 0
  dir!: Awaited<ReturnType<typeof tempDir>>

  /**
   * `rtt`: round trips between nodes by name, set on the relays as each node starts — before it dials or is
   * dialled — so the first ping already measures them (gossip smooths RTT, so a late change takes a while).
   */
  constructor(readonly opts: { heartbeatMs?: number; downAfterMs?: number; rtt?: Array<[string, string, number]> } = {}) {
    // distinct loopback /24s per test process, so parallel test files never share a Machine address
    this.base = 100 + (process.pid % 25) * 4
  }

  get fleetDir(): string { return join(this.dir.path, 'fleet') }

  async init(): Promise<void> {
    this.dir = await tempDir('edgeproxy-multinode-')
    const r = await runCli(['fleet', 'init', '--out', this.fleetDir])
    if (r.code !== 0) throw new Error(`fleet init failed: ${r.stderr}`)
  }

  node(name: string): FleetNode {
    const n = this.nodes.get(name)
    if (n === undefined) throw new Error(`no node ${name}`)
    return n
  }

  /** Starts `edgeproxy daemon` for a node; the first node is everyone's bootstrap. */
  async start(name: string, region: string, roles: string, extra: string[] = []): Promise<FleetNode> {
    const i = this.nextNode++
    const ip = `127.0.${this.base}.${10 + i}`
    const relay = await startChaosRelay({ target: { host: ip, port: 1 } })
    this.relays.push(relay)
    for (const [a, b, ms] of this.opts.rtt ?? []) {
      const other = a === name ? this.endpoints.get(b) : b === name ? this.endpoints.get(a) : undefined
      if (other === undefined) continue
      relay.set({ delayMs: { up: ms / 2, down: ms / 2 } }, { from: other.ip })
      other.relay.set({ delayMs: { up: ms / 2, down: ms / 2 } }, { from: ip })
    }
    this.endpoints.set(name, { ip, relay })
    const seed = [...this.nodes.values()][0]
    const daemon = await startDaemonProcess([
      'daemon', '--name', name, '--region', region, '--roles', roles, '--data-dir', join(this.dir.path, name),
      '--admin', '127.0.0.1:0', '--no-fsync', '--fleet', this.fleetDir,
      '--gossip-listen', `/ip4/${ip}/tcp/0`, '--gossip-announce', relay.multiaddr(), '--gossip-dial-from', ip,
      ...(seed === undefined ? [] : ['--bootstrap', seed.relay.multiaddr()]),
      '--backhaul-listen', `${ip}:0`, '--machine-range', `127.68.${this.base + i}.0/24`,
      '--port-map', PUBLIC_PORTS.map((p) => `${p}=0`).join(','),
      '--heartbeat-ms', String(this.opts.heartbeatMs ?? 200), '--down-after-ms', String(this.opts.downAfterMs ?? 2000),
      '--sync-interval-ms', '500', ...extra,
    ], { timeoutMs: 30_000 })
    const started = logLine(daemon.logs(), 'node started') as { gossipListen: string[] }
    const port = Number(/\/tcp\/(\d+)/.exec(started.gossipListen[0])?.[1])
    relay.setTarget({ host: ip, port })
    const node: FleetNode = {
      name, region, ip, roles, daemon, api: daemon.api, relay,
      publicPort: (p) => waitFor(() => {
        for (const line of daemon.logs().split('\n')) {
          if (!line.includes('"public listener open"')) continue
          const rec = JSON.parse(line) as { port: number; bind: string }
          if (rec.port === p) return Number(rec.bind.split(':').pop())
        }
        return undefined
      }, { timeoutMs: 10_000, what: `${name} listening for public port ${p}` }),
    }
    this.nodes.set(name, node)
    return node
  }

  /** Changes the round trip between two running nodes (both relays, scoped to each other's address). */
  latency(a: string, b: string, rttMs: number): void {
    const na = this.node(a)
    const nb = this.node(b)
    const half = rttMs / 2
    na.relay.set({ delayMs: { up: half, down: half } }, { from: nb.ip })
    nb.relay.set({ delayMs: { up: half, down: half } }, { from: na.ip })
  }

  async nodesSeenBy(node: string): Promise<Array<NodeRecord & { up: boolean; rttMs?: number }>> {
    return await json(`${this.node(node).api}/v1/nodes`)
  }

  /**
   * Waits until `from` sees each named node up with a measured RTT in `[atLeast, below)`. RTT is the least of a
   * node's last few pings, so on a busy box (CI runs fleets side by side) it can read well above the relays' delay
   * until one quiet ping lands; waiting for that makes later assertions on the number hold for a window of pings.
   */
  async waitRtts(from: string, ranges: Record<string, [atLeast: number, below: number]>): Promise<void> {
    await waitFor(async () => {
      const seen = await this.nodesSeenBy(from)
      const settled = Object.entries(ranges).every(([n, [lo, hi]]) => {
        const rec = seen.find((x) => x.name === n)
        return rec !== undefined && rec.up && rec.rttMs !== undefined && rec.rttMs >= lo && rec.rttMs < hi
      })
      if (!settled) throw new Error(`last seen ${JSON.stringify(Object.fromEntries(seen.map((x) => [x.name, x.up ? x.rttMs : 'down'])))}`)
      return true
    }, { timeoutMs: 30_000, intervalMs: 200, what: `${from} measuring RTTs in ${JSON.stringify(ranges)}` })
  }

  async deploy(via: string, toml: string): Promise<void> {
    const res = await request(`${this.node(via).api}/v1/apps/${/app = "([^"]+)"/.exec(toml)![1]}`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: toml })
    if (res.statusCode >= 300) throw new Error(`deploy failed: ${res.statusCode} ${await res.body.text()}`)
    await res.body.dump()
  }

  /** A Machine of `app` on worker `node`, created through that node's admin API (its supervisor runs it). */
  async machine(node: string, app: string, env: Record<string, string> = {}, cmd = [process.execPath, FLEET_MACHINE]): Promise<MachineRecord> {
    const res = await request(`${this.node(node).api}/v1/apps/${app}/machines`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ node, cmd, env }),
    })
    const body = await res.body.text()
    if (res.statusCode !== 201) throw new Error(`machine create on ${node} failed: ${res.statusCode} ${body}`)
    return JSON.parse(body) as MachineRecord
  }

  /** Waits until node `on` sees the Machine in a state that satisfies `ok`. */
  async waitMachine(on: string, id: string, ok: (m: MachineRecord) => boolean, what: string, timeoutMs = 20_000): Promise<MachineRecord> {
    return await waitFor(async () => {
      const m = await json<MachineRecord>(`${this.node(on).api}/v1/machines/${id}`).catch(() => undefined)
      return m !== undefined && ok(m) ? m : undefined
    }, { timeoutMs, intervalMs: 50, what: `${what} (Machine ${id} seen from ${on})` })
  }

  /**
   * SIGKILL, as a crashed host: the daemon dies at once and its peers learn it only by its silence. Its
   * Machines (process groups of their own) are then killed too, so the test leaves no process behind.
   */
  async crash(name: string): Promise<void> {
    const n = this.node(name)
    await n.daemon.kill()
    const root = join(this.dir.path, name, 'machines')
    for (const id of await readdir(root).catch(() => [] as string[])) {
      const rec = await readFile(join(root, id, 'machine.json'), 'utf8').then((t) => JSON.parse(t) as { pid: number }, () => undefined)
      if (rec === undefined) continue
      try { process.kill(-rec.pid, 'SIGKILL') } catch { /* already gone */ }
    }
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.nodes.values()].map((n) => n.daemon.stop()))
    await Promise.all(this.relays.map((r) => r.close()))
    await this.dir?.remove()
  }
}

export async function json<T>(url: string): Promise<T> {
  const res = await request(url)
  if (res.statusCode !== 200) throw new Error(`${url}: ${res.statusCode} ${await res.body.text()}`)
  return (await res.body.json()) as T
}

/** The JSON log record with this message. */
export function logLine(logs: string, msg: string): Record<string, unknown> {
  for (const line of logs.split('\n')) {
    if (!line.includes(`"msg":"${msg}"`)) continue
    return JSON.parse(line) as Record<string, unknown>
  }
  throw new Error(`no "${msg}" in the log`)
}
