import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import type { MachineRecord } from '../../../schemas/catalog-records.js'
import { type ChaosRelay, startChaosRelay } from '../../helpers/chaos-relay.js'
import { type DaemonProcess, runCli, startDaemonProcess } from '../../helpers/cli.js'
import { tempDir } from '../../helpers/temp-dir.js'
import { waitFor } from '../../helpers/wait-for.js'
import { type LossyLink, startLossyLink } from './lossy-link.js'

/**
 * A fleet of real `edgeproxy daemon` child processes for the hardening suite. Each node has its own
 * 127.0.x.y (gossip listens and dials from it), its own data dir, its own Machine range (127.70.x.0/24),
 * and a chaos relay in front of its gossip listener that is the only gossip address it announces: every
 * gossip link crosses the relay of the node being called, which knows the caller by its address. That is
 * what partitions, connection loss and delay act on. Behind the relay a lossy link (lossy-link.ts) can add
 * TCP-style packet loss (retransmission stalls). A node can be stopped, crashed and restarted from its data dir
 * behind the same relay and address, as a real host would come back.
 */
export interface FleetNodeSpec {
  name: string
  region: string
  roles: string
  /** More daemon flags (e.g. `--no-fsync`). */
  extra?: string[]
}

export interface HardNode {
  readonly spec: FleetNodeSpec
  readonly ip: string
  readonly relay: ChaosRelay
  /** Between the relay and the gossip listener: TCP-style packet loss. */
  readonly link: LossyLink
  daemon: DaemonProcess
  /** http://host:port of the admin API (changes on restart: the port is picked at start). */
  api: string
}

/** Public ports every node binds on a free port (port 0): an app's port → what the log says was bound. */
export const FLEET_PUBLIC_PORTS = [80, 443, 5432, 7000, 7001]

export class DaemonFleet {
  readonly nodes = new Map<string, HardNode>()
  private readonly relays: ChaosRelay[] = []
  private readonly links: LossyLink[] = []
  private readonly octet3: number
  private next = 0
  dir!: Awaited<ReturnType<typeof tempDir>>

  constructor(readonly opts: { heartbeatMs?: number; downAfterMs?: number; syncIntervalMs?: number } = {}) {
    // a /24 of our own per test process (other suites use 127.0.100-199.x and 127.66/68.x)
    this.octet3 = 200 + (process.pid % 50)
  }

  get fleetDir(): string { return join(this.dir.path, 'fleet') }

  async init(): Promise<void> {
    this.dir = await tempDir('edgeproxy-hardening-')
    const r = await runCli(['fleet', 'init', '--out', this.fleetDir])
    if (r.code !== 0) throw new Error(`fleet init failed: ${r.stderr}`)
  }

  node(name: string): HardNode {
    const n = this.nodes.get(name)
    if (n === undefined) throw new Error(`no node ${name}`)
    return n
  }

  get all(): HardNode[] { return [...this.nodes.values()] }

  dataDir(name: string): string { return join(this.dir.path, name) }

  /** Starts a node; the first node started is every later node's bootstrap. */
  async start(spec: FleetNodeSpec): Promise<HardNode> {
    const i = this.next++
    const ip = `127.0.${this.octet3}.${10 + i}`
    const relay = await startChaosRelay({ target: { host: ip, port: 1 }, seed: 7919 * (i + 1) })
    this.relays.push(relay)
    const link = await startLossyLink(ip, 104_729 * (i + 1))
    this.links.push(link)
    relay.setTarget({ host: ip, port: link.port })
    const node = { spec, ip, relay, link, daemon: undefined as unknown as DaemonProcess, api: '' } as HardNode & { machineNet: number }
    node.machineNet = (process.pid % 40) * 6 + i
    this.nodes.set(spec.name, node)
    await this.launch(node)
    return node
  }

  /** Starts a stopped or crashed node again from its data dir, behind the same relay and address. */
  async restart(name: string): Promise<HardNode> {
    const node = this.node(name)
    await this.launch(node)
    return node
  }

  private async launch(node: HardNode): Promise<void> {
    const { spec, ip, relay, link } = node
    const seed = [...this.nodes.values()].find((n) => n !== node && n.daemon !== undefined && n.daemon.child.exitCode === null && n.daemon.child.signalCode === null)
    const machineNet = (node as HardNode & { machineNet: number }).machineNet
    node.daemon = await startDaemonProcess([
      'daemon', '--name', spec.name, '--region', spec.region, '--roles', spec.roles, '--data-dir', this.dataDir(spec.name),
      '--admin', '127.0.0.1:0', '--fleet', this.fleetDir,
      '--gossip-listen', `/ip4/${ip}/tcp/0`, '--gossip-announce', relay.multiaddr(), '--gossip-dial-from', ip,
      ...(seed === undefined ? [] : ['--bootstrap', seed.relay.multiaddr()]),
      '--backhaul-listen', `${ip}:0`, '--machine-range', `127.70.${machineNet}.0/24`,
      '--port-map', FLEET_PUBLIC_PORTS.map((p) => `${p}=0`).join(','),
      '--heartbeat-ms', String(this.opts.heartbeatMs ?? 250), '--down-after-ms', String(this.opts.downAfterMs ?? 2500),
      '--sync-interval-ms', String(this.opts.syncIntervalMs ?? 1000), ...(spec.extra ?? []),
    ], { timeoutMs: 30_000 })
    node.api = node.daemon.api
    const started = logRecord(node.daemon.logs(), 'node started') as { gossipListen: string[] }
    const port = Number(/\/tcp\/(\d+)/.exec(started.gossipListen[0])?.[1])
    link.setTarget({ host: ip, port })
  }

  /** Every node has every other node's record and hears it (heartbeats). */
  async waitAllUp(timeoutMs = 30_000): Promise<void> {
    const n = this.nodes.size
    await waitFor(async () => {
      const views = await Promise.all(this.all.map((node) => getJson<Array<{ up: boolean }>>(`${node.api}/v1/nodes`)))
      return views.every((ns) => ns.length === n && ns.every((x) => x.up))
    }, { timeoutMs, intervalMs: 100, what: `all ${n} nodes up on every node` })
  }

  /** The port public port `p` is bound on by the node's current process (from its log). */
  async publicPort(name: string, p: number): Promise<number> {
    const node = this.node(name)
    return await waitFor(() => {
      let found: number | undefined
      for (const line of node.daemon.logs().split('\n')) {
        if (!line.includes('"public listener open"')) continue
        const rec = JSON.parse(line) as { port: number; bind: string }
        if (rec.port === p) found = Number(rec.bind.split(':').pop())
      }
      return found
    }, { timeoutMs: 15_000, what: `${name} listening for public port ${p}` })
  }

  /**
   * Cuts every gossip link between the groups, both ways, at the relays (open connections are reset, new
   * ones refused); links inside a group stay.
   */
  partition(...groups: string[][]): void {
    for (const group of groups) {
      const others = groups.filter((g) => g !== group).flat().map((n) => this.node(n).ip)
      for (const name of group) this.node(name).relay.set({ mode: 'refuse' }, { from: others })
    }
  }

  heal(): void {
    for (const n of this.nodes.values()) n.relay.reset()
  }

  async deploy(via: string, toml: string): Promise<void> {
    const app = /app = "([^"]+)"/.exec(toml)![1]
    const res = await request(`${this.node(via).api}/v1/apps/${app}`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: toml })
    const text = await res.body.text()
    if (res.statusCode >= 300) throw new Error(`deploy of ${app} via ${via} failed: ${res.statusCode} ${text}`)
  }

  /** A Machine of `app` created through `via`'s admin API (placed on `body.node` when given). */
  async machine(via: string, app: string, body: Record<string, unknown>): Promise<MachineRecord> {
    const res = await request(`${this.node(via).api}/v1/apps/${app}/machines`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    })
    const text = await res.body.text()
    if (res.statusCode !== 201) throw new Error(`machine create via ${via} failed: ${res.statusCode} ${text}`)
    return JSON.parse(text) as MachineRecord
  }

  async waitMachine(on: string, id: string, ok: (m: MachineRecord) => boolean, what: string, timeoutMs = 30_000): Promise<MachineRecord> {
    return await waitFor(async () => {
      const m = await getJson<MachineRecord>(`${this.node(on).api}/v1/machines/${id}`).catch(() => undefined)
      return m !== undefined && ok(m) ? m : undefined
    }, { timeoutMs, intervalMs: 50, what: `${what} (Machine ${id} seen from ${on})` })
  }

  /** SIGKILL, as a host that dies; its Machines (own process groups) are killed too. */
  async crash(name: string): Promise<void> {
    const n = this.node(name)
    await n.daemon.kill()
    await killMachinesOf(this.dataDir(name))
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.nodes.values()].map(async (n) => {
      if (n.daemon === undefined) return
      await n.daemon.stop()
      await killMachinesOf(this.dataDir(n.spec.name)) // a daemon that failed to stop its Machines leaves nothing either
    }))
    await Promise.all(this.relays.map((r) => r.close()))
    await Promise.all(this.links.map((l) => l.close()))
    await this.dir?.remove()
  }
}

/** Kills every Machine process group a data dir's pid files name (a crashed daemon cannot). */
export async function killMachinesOf(dataDir: string): Promise<void> {
  const root = join(dataDir, 'machines')
  for (const id of await readdir(root).catch(() => [] as string[])) {
    const rec = await readFile(join(root, id, 'machine.json'), 'utf8').then((t) => JSON.parse(t) as { pid: number }, () => undefined)
    if (rec === undefined) continue
    try { process.kill(-rec.pid, 'SIGKILL') } catch { /* already gone */ }
  }
}

export async function getJson<T>(url: string, headers: Record<string, string> = {}): Promise<T> {
  const res = await request(url, { headers, headersTimeout: 10_000, bodyTimeout: 10_000 })
  const text = await res.body.text()
  if (res.statusCode !== 200) throw new Error(`${url}: ${res.statusCode} ${text}`)
  return JSON.parse(text) as T
}

/** The first JSON log record with this message. */
export function logRecord(logs: string, msg: string): Record<string, unknown> {
  for (const line of logs.split('\n')) if (line.includes(`"msg":"${msg}"`)) return JSON.parse(line) as Record<string, unknown>
  throw new Error(`no "${msg}" in the log`)
}

/** One Prometheus sample's value from /metrics text (0 when absent). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const ok = Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))
    if (ok) total += Number(m[3])
  }
  return total
}
