import { spawn } from 'node:child_process'
import { realpathSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { once } from 'node:events'
import { connect } from 'node:net'
import { parseArgs } from 'node:util'
import pino from 'pino'
import { openCatalog } from '../catalog/index.js'
import type { Catalog } from '../catalog/catalog-api.js'
import type { MachineRecord } from '../schemas/catalog-records.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'
import { demoAppCommand } from '../machines/demo-app-command.js'
import { machineSupervisor } from '../machines/supervisor.js'

/**
 * Machines benchmark (issue 5): demo-app start → ready latency against a bare spawn of the same command
 * (the baseline, same script), suspend → resume latency, and the supervisor's CPU while N Machines idle.
 *
 *   npx tsx bench/machines-supervisor.ts [--samples 30] [--machines 200] [--idle-seconds 20]
 *   npm run build && node dist/bench/machines-supervisor.js …   (demo app without the tsx loader, as deployed)
 */

export interface MachinesBenchOptions {
  samples: number
  machines: number
  idleSeconds: number
}

export interface MachinesBenchResult {
  command: string[]
  bareStartToListen: Summary
  startToReady: Summary
  resumeToReady: Summary
  suspend: Summary
  idle: { machines: number; seconds: number; cpuMsPerSecond: number; cpuPercentOfOneCore: number; supervisorRssMiB: number; readyInMs: number }
}

interface Summary { p50: number; p99: number; n: number }

function summarize(values: number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]
  return { p50: round(at(0.5)), p99: round(at(0.99)), n: sorted.length }
}
const round = (ms: number): number => Math.round(ms * 10) / 10
const now = (): number => performance.now()

const PORT = 18_080
const RANGE = '127.66.200.0/22'

function waitFor(catalog: Catalog, id: string, predicate: (m: MachineRecord) => boolean, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sub.close(); reject(new Error(`Machine ${id} not there after ${timeoutMs} ms: ${JSON.stringify(catalog.getMachine(id))}`)) }, timeoutMs)
    const check = (): void => {
      const m = catalog.getMachine(id)
      if (m !== undefined && predicate(m)) { clearTimeout(timer); sub.close(); resolve() }
    }
    const sub = catalog.subscribe({}, check)
    check()
  })
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port })
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/** Baseline: the same command spawned by hand, timed to the moment its port accepts. */
async function bareStart(command: string[], host: string): Promise<number> {
  const began = now()
  const child = spawn(command[0], command.slice(1), { env: { PATH: process.env.PATH, PORT: String(PORT), FLY_PRIVATE_IP: host }, stdio: 'ignore' })
  while (!(await accepts(host, PORT))) await new Promise((r) => setTimeout(r, 2))
  const took = now() - began
  child.kill('SIGINT')
  await once(child, 'exit')
  return took
}

export async function runMachinesBench(options: MachinesBenchOptions): Promise<MachinesBenchResult> {
  const dataDir = await mkdtemp(join(tmpdir(), 'edgeproxy-bench-machines-'))
  const catalog = await openCatalog({ dataDir, nodeName: 'bench-1' })
  const command = demoAppCommand()
  const supervisor = machineSupervisor({ dataDir, machineRange: RANGE })({ catalog, log: pino({ level: 'warn' }) })
  try {
    await catalog.deployApp(parseAppConfigText(`app = "demo"\n[http_service]\ninternal_port = ${PORT}\n`).config)
    // idle Machines get the checks `fly launch` writes (every 15 s), so the idle cost includes checking them
    await catalog.deployApp(parseAppConfigText(`app = "idle"\n[http_service]\ninternal_port = ${PORT}\n[[http_service.checks]]\npath = "/healthz"\ninterval = "15s"\ntimeout = "2s"\ngrace_period = "1s"\n`).config)
    await supervisor.start()

    const bare: number[] = []
    for (let i = 0; i < options.samples; i++) bare.push(await bareStart(command, '127.66.199.250'))

    const m = await catalog.createMachine({ app: 'demo', region: 'ams', node: 'bench-1', spec: { cmd: command }, desired: 'stopped' })
    await waitFor(catalog, m.id, (x) => x.state === 'stopped')
    const startToReady: number[] = []
    const suspend: number[] = []
    const resumeToReady: number[] = []
    for (let i = 0; i < options.samples; i++) {
      let t = now()
      await catalog.setDesiredState(m.id, 'started', `bench: start ${i}`)
      await waitFor(catalog, m.id, (x) => x.state === 'started' && x.ready)
      startToReady.push(now() - t)

      t = now()
      await catalog.setDesiredState(m.id, 'suspended', `bench: suspend ${i}`)
      await waitFor(catalog, m.id, (x) => x.state === 'suspended')
      suspend.push(now() - t)
      t = now()
      await catalog.setDesiredState(m.id, 'started', `bench: resume ${i}`)
      await waitFor(catalog, m.id, (x) => x.state === 'started' && x.ready)
      resumeToReady.push(now() - t)

      await catalog.setDesiredState(m.id, 'stopped', `bench: stop ${i}`)
      await waitFor(catalog, m.id, (x) => x.state === 'stopped')
    }

    const readyBegan = now()
    const idle = await Promise.all(Array.from({ length: options.machines }, () => catalog.createMachine({ app: 'idle', region: 'ams', node: 'bench-1', spec: { cmd: command } })))
    await Promise.all(idle.map((x) => waitFor(catalog, x.id, (r) => r.state === 'started' && r.ready, 120_000)))
    const readyInMs = now() - readyBegan
    await new Promise((r) => setTimeout(r, 2000)) // let start-up work settle
    const cpu0 = process.cpuUsage()
    const t0 = now()
    await new Promise((r) => setTimeout(r, options.idleSeconds * 1000))
    const cpu = process.cpuUsage(cpu0)
    const seconds = (now() - t0) / 1000
    const cpuMs = (cpu.user + cpu.system) / 1000
    return {
      command,
      bareStartToListen: summarize(bare),
      startToReady: summarize(startToReady),
      suspend: summarize(suspend),
      resumeToReady: summarize(resumeToReady),
      idle: {
        machines: options.machines,
        seconds: round(seconds),
        cpuMsPerSecond: round(cpuMs / seconds),
        cpuPercentOfOneCore: round((cpuMs / seconds) / 10),
        supervisorRssMiB: Math.round(process.memoryUsage().rss / 1024 / 1024),
        readyInMs: Math.round(readyInMs),
      },
    }
  } finally {
    await supervisor.stop()
    await catalog.close()
    await rm(dataDir, { recursive: true, force: true })
  }
}

function markdown(r: MachinesBenchResult): string {
  return [
    '| measurement | p50 ms | p99 ms | n |',
    '|---|---|---|---|',
    `| bare spawn → port accepts (baseline) | ${r.bareStartToListen.p50} | ${r.bareStartToListen.p99} | ${r.bareStartToListen.n} |`,
    `| start → ready via the supervisor | ${r.startToReady.p50} | ${r.startToReady.p99} | ${r.startToReady.n} |`,
    `| ratio start → ready ÷ baseline (p50) | ${round(r.startToReady.p50 / r.bareStartToListen.p50)} | | |`,
    `| suspend → suspended | ${r.suspend.p50} | ${r.suspend.p99} | ${r.suspend.n} |`,
    `| resume → ready | ${r.resumeToReady.p50} | ${r.resumeToReady.p99} | ${r.resumeToReady.n} |`,
    '',
    `Idle: ${r.idle.machines} Machines (http check every 15 s) ready in ${r.idle.readyInMs} ms; supervisor process CPU ${r.idle.cpuMsPerSecond} ms/s (${r.idle.cpuPercentOfOneCore}% of one core) over ${r.idle.seconds} s; RSS ${r.idle.supervisorRssMiB} MiB.`,
    `Command: \`${r.command.join(' ')}\``,
  ].join('\n')
}

function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false // imported by a runner whose argv[1] is not a file
  }
}
if (isMain()) {
  const { values } = parseArgs({ options: { samples: { type: 'string', default: '30' }, machines: { type: 'string', default: '200' }, 'idle-seconds': { type: 'string', default: '20' } } })
  const result = await runMachinesBench({ samples: Number(values.samples), machines: Number(values.machines), idleSeconds: Number(values['idle-seconds']) })
  console.log(markdown(result))
  console.log(JSON.stringify(result))
}
