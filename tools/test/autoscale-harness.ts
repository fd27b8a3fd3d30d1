import { randomInt } from 'node:crypto'
import pino from 'pino'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import { isRunning, processGroupMembers, readProcStat } from '../../machines/process-info.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import type { ProxyServer } from '../../proxy/index.js'
import { type Daemon, startDaemon } from '../daemon.js'
import { writeAutoscaleFixture } from './autoscale-fixture.js'

/** Public ports the autoscale tests use; each binds a free port (port 0) on the node. */
export const PUBLIC_PORTS = [80, 443, 5432, 10001, 10002, 10003] as const

/**
 * One real node in this process (tools/daemon.ts: catalog in a temp dir, supervisor running real Machine
 * processes on its own loopback /24, proxy, admin API on port 0), with fast autostop passes for tests.
 */
export interface AutoscaleNode {
  daemon: Daemon
  fixture: string
  /** The internal_port every Machine of this node's tests listens on. */
  port: number
  deploy(toml: string): Promise<void>
  /** Creates `count` Machines of `app`, waits until the supervisor reports each in `state`. */
  machines(app: string, count: number, opts?: { env?: Record<string, string>; desired?: 'started' | 'stopped'; region?: string }): Promise<MachineRecord[]>
  waitMachine(id: string, predicate: (m: MachineRecord) => boolean, what: string, timeoutMs?: number): Promise<MachineRecord>
  url(publicPort: number, path?: string): string
  publicPort(port: number): number
  /** The proxy's autostart / autostop counters. */
  autoscale(): ProxyServer['autoscale']
  stop(): Promise<void>
}

export async function startAutoscaleNode(init: { wakeTimeoutMs?: number; drainMs?: number; autostopIntervalMs?: number } = {}): Promise<AutoscaleNode> {
  const dir = await tempDir('edgeproxy-autoscale-')
  const fixture = await writeAutoscaleFixture(dir.path)
  const port = randomInt(20_000, 60_000)
  const seenPids = new Set<number>()
  let daemon: Daemon
  try {
    daemon = await startDaemon({
      dataDir: dir.path,
      name: 'ams-1',
      region: 'ams',
      roles: ['edge', 'worker'],
      admin: { host: '127.0.0.1', port: 0 },
      fsync: false,
      machineRange: `127.66.${randomInt(20, 250)}.0/24`,
      portMap: Object.fromEntries(PUBLIC_PORTS.map((p) => [p, 0])),
      autoscale: { autostopIntervalMs: init.autostopIntervalMs ?? 1000, wakeTimeoutMs: init.wakeTimeoutMs, drainMs: init.drainMs },
    }, pino({ level: process.env.EP_TEST_LOG ?? 'silent' }))
  } catch (err) {
    await dir.remove()
    throw err
  }
  const catalog = daemon.catalog
  const notePids = (): void => { for (const p of daemon.machines?.processes() ?? []) seenPids.add(p.pid) }
  const sub = catalog.subscribe({}, notePids)

  const node: AutoscaleNode = {
    daemon,
    fixture,
    port,
    async deploy(toml) {
      await catalog.deployApp(parseAppConfigText(toml.replaceAll('INTERNAL_PORT', String(port))).config)
      await daemon.proxy!.whenApplied(catalog.lastSeq)
    },
    async machines(app, count, opts = {}) {
      const desired = opts.desired ?? 'stopped'
      const out: MachineRecord[] = []
      for (let i = 0; i < count; i++) {
        const m = await catalog.createMachine({ app, region: opts.region ?? 'ams', node: 'ams-1', desired, spec: { cmd: [process.execPath, fixture], env: opts.env ?? {} } })
        out.push(m)
      }
      const settled = await Promise.all(out.map((m) => node.waitMachine(m.id, (x) => desired === 'stopped' ? x.state === 'stopped' : x.state === 'started' && x.ready, desired)))
      await daemon.proxy!.whenApplied(catalog.lastSeq)
      return settled
    },
    waitMachine(id, predicate, what, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        let done = false
        const check = (): void => {
          const m = catalog.getMachine(id)
          if (done || m === undefined || !predicate(m)) return
          done = true
          clearTimeout(timer)
          s.close()
          resolve(m)
        }
        const timer = setTimeout(() => {
          done = true
          s.close()
          const m = catalog.getMachine(id)
          reject(new Error(`Machine ${id} not ${what} within ${timeoutMs} ms: ${JSON.stringify(m && { desired: m.desired, state: m.state, reason: m.stateReason, ready: m.ready, cordoned: m.cordoned })}`))
        }, timeoutMs)
        const s = catalog.subscribe({}, check)
        check()
      })
    },
    autoscale() {
      return daemon.proxy!.autoscale
    },
    publicPort(p) {
      const bound = daemon.proxy!.boundPort(p)
      if (bound === undefined) throw new Error(`no listener for public port ${p}`)
      return bound
    },
    url(p, path = '/') {
      return `http://127.0.0.1:${node.publicPort(p)}${path}`
    },
    async stop() {
      notePids()
      sub.close()
      await daemon.stop()
      const survivors = [...seenPids].flatMap((pid) => [pid, ...processGroupMembers(pid)]).filter((pid) => isRunning(readProcStat(pid)))
      for (const pid of survivors) {
        try { process.kill(pid, 'SIGKILL') } catch { /* gone between the check and the kill */ }
      }
      await dir.remove()
      if (survivors.length > 0) throw new Error(`Machine processes left running after the test: ${[...new Set(survivors)].join(', ')}`)
    },
  }
  return node
}

/** fly.toml of an http app on public port 80 whose Machines listen on the node's internal port. */
export function httpAppToml(app: string, o: { autoStop?: 'off' | 'stop' | 'suspend'; min?: number; soft?: number; hard?: number; type?: 'requests' | 'connections'; check?: boolean } = {}): string {
  return `app = "${app}"
primary_region = "ams"
kill_signal = "SIGINT"
kill_timeout = "5s"

[[services]]
  internal_port = INTERNAL_PORT
  protocol = "tcp"
  auto_stop_machines = "${o.autoStop ?? 'off'}"
  auto_start_machines = true
  min_machines_running = ${o.min ?? 0}
  [services.concurrency]
    type = "${o.type ?? 'requests'}"
    soft_limit = ${o.soft ?? 20}
${o.hard === undefined ? '' : `    hard_limit = ${o.hard}\n`}  [[services.ports]]
    port = 80
    handlers = ["http"]
${o.check === false ? '' : `  [[services.http_checks]]
    path = "/healthz"
    interval = "1s"
    timeout = "1s"
    grace_period = "0s"
`}`
}
