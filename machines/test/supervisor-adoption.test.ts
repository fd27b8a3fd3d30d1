import { type ChildProcess, spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { openCatalog } from '../../catalog/index.js'
import type { Catalog } from '../../catalog/catalog-api.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { readMachineLogs } from '../logs/read-logs.js'
import { bootId, isRunning, isStopped, processGroupMembers, readProcStat } from '../process-info.js'
import { machineSupervisor, type MachineSupervisor } from '../supervisor.js'
import { writeFixtureApp } from './fixture-app.js'
import { FAST, isReady, NODE, testLog, waitMachine } from './harness.js'

const HOST_SCRIPT = fileURLToPath(new URL('./supervisor-host.ts', import.meta.url))
const TSX = createRequire(import.meta.url).resolve('tsx')

interface HostLine { started?: boolean; id?: string; state?: string; ready?: boolean; pid?: number }

/** The stand-in daemon: its stdout as parsed lines, and a way to wait for one. */
class Host {
  readonly lines: HostLine[] = []
  private waiters: Array<() => void> = []
  readonly child: ChildProcess
  readonly exited: Promise<void>

  constructor(dataDir: string, range: string) {
    this.child = spawn(process.execPath, ['--import', TSX, HOST_SCRIPT, dataDir, range], { stdio: ['pipe', 'pipe', 'inherit'] })
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()))
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.lines.push(JSON.parse(line) as HostLine)
      for (const w of this.waiters) w()
    })
  }

  send(id: string, desired: string, reason: string): void {
    this.child.stdin!.write(`${JSON.stringify({ id, desired, reason })}\n`)
  }

  /** The newest line about each Machine satisfies `check`. */
  async until(check: (latest: Map<string, HostLine>) => boolean, what: string, timeoutMs = 15_000): Promise<Map<string, HostLine>> {
    const latest = (): Map<string, HostLine> => {
      const m = new Map<string, HostLine>()
      for (const l of this.lines) if (l.id !== undefined) m.set(l.id, { ...m.get(l.id), ...l, pid: l.pid ?? m.get(l.id)?.pid })
      return m
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`host: timed out waiting for ${what}; last lines ${JSON.stringify(this.lines.slice(-5))}`)), timeoutMs)
      const test = (): void => {
        const now = latest()
        if (check(now)) {
          clearTimeout(timer)
          this.waiters = this.waiters.filter((w) => w !== test)
          resolve(now)
        }
      }
      this.waiters.push(test)
      test()
    })
  }

  async crash(): Promise<void> {
    this.child.kill('SIGKILL')
    await this.exited
  }
}

let cleanup: Array<() => Promise<void>> = []
let pids: number[] = []
afterEach(async () => {
  for (const c of cleanup.reverse()) await c()
  cleanup = []
  const survivors = pids.flatMap((p) => [p, ...processGroupMembers(p)]).filter((p) => isRunning(readProcStat(p)))
  for (const p of survivors) process.kill(p, 'SIGKILL')
  pids = []
  expect(survivors).toEqual([])
})

async function setup(): Promise<{ dir: string; range: string; port: number; catalog: Catalog; appPath: string }> {
  const dir = await tempDir('edgeproxy-adopt-')
  cleanup.push(dir.remove)
  const range = `127.66.${randomInt(100, 255)}.0/24`
  const port = randomInt(20_000, 60_000)
  const catalog = await openCatalog({ dataDir: dir.path, nodeName: NODE })
  const appPath = await writeFixtureApp(dir.path)
  await catalog.deployApp(parseAppConfigText(`app = "web"\nkill_timeout = "2s"\n[http_service]\ninternal_port = ${port}\n`).config)
  return { dir: dir.path, range, port, catalog, appPath }
}

test('a restarted daemon adopts the Machines its predecessor left running, and stops the ones it no longer hosts', async () => {
  const { dir, range, port, catalog, appPath } = await setup()
  const spec = { cmd: [process.execPath, appPath], env: { PRINT_EVERY_MS: '100' } }
  const [keep, stopMe, sleeper, gone] = await Promise.all([0, 1, 2, 3].map(() => catalog.createMachine({ app: 'web', region: 'ams', node: NODE, spec })))
  await catalog.close()

  // a first daemon starts them all and suspends one, then dies without a word
  const host = new Host(dir, range)
  cleanup.push(async () => { if (host.child.exitCode === null && host.child.signalCode === null) await host.crash() })
  const ids = [keep.id, stopMe.id, sleeper.id, gone.id]
  await host.until((l) => ids.every((id) => l.get(id)?.ready === true), 'all four ready')
  host.send(sleeper.id, 'suspended', 'autostop: idle')
  const before = await host.until((l) => l.get(sleeper.id)?.state === 'suspended', 'one suspended')
  const pidOf = (id: string): number => before.get(id)?.pid as number
  pids = ids.map(pidOf)
  await host.crash()
  for (const id of ids) expect(isRunning(readProcStat(pidOf(id)))).toBe(true)

  // while no daemon runs, the control plane changes its mind about two of them
  const catalog2 = await openCatalog({ dataDir: dir, nodeName: NODE })
  cleanup.push(() => catalog2.close())
  await catalog2.setDesiredState(stopMe.id, 'stopped', 'api: stop while the node was down')
  await catalog2.removeMachine(gone.id)

  const supervisor = machineSupervisor({ dataDir: dir, machineRange: range, ...FAST })({ catalog: catalog2, log: testLog })
  cleanup.unshift(() => supervisor.stop()) // stopped before the catalog closes
  await supervisor.start()

  // the kept one: same process, still started and ready, still reachable on its address
  expect(supervisor.processes()).toContainEqual({ machineId: keep.id, pid: pidOf(keep.id), adopted: true })
  const kept = catalog2.getMachine(keep.id)!
  expect(kept).toMatchObject({ state: 'started', ready: true })
  const res = await request(`http://${kept.privateAddr}:${port}/`)
  expect(((await res.body.json()) as { pid: number }).pid).toBe(pidOf(keep.id))

  // its log carries on: lines printed after the adoption arrive through the reopened pipe
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), 5000)
  let adoptedNote = false
  let tickAfter = false
  for await (const line of readMachineLogs(dir, keep.id, { follow: true, signal: ac.signal })) {
    if (line.includes(`[edgeproxy] adopted pid ${pidOf(keep.id)}`)) adoptedNote = true
    else if (adoptedNote && line.includes('app: tick')) { tickAfter = true; break }
  }
  clearTimeout(timer)
  expect([adoptedNote, tickAfter]).toEqual([true, true])

  // the suspended one is adopted as suspended, and resumes on request
  expect(catalog2.getMachine(sleeper.id)).toMatchObject({ state: 'suspended', ready: false })
  expect(isStopped(readProcStat(pidOf(sleeper.id)))).toBe(true)
  await catalog2.setDesiredState(sleeper.id, 'started', 'autostart: request r9')
  await waitMachine(catalog2, sleeper.id, isReady, 'resumed')
  expect(supervisor.processes().find((p) => p.machineId === sleeper.id)?.pid).toBe(pidOf(sleeper.id))

  // the one asked to stop is stopped cleanly, per kill_signal
  const stopped = await waitMachine(catalog2, stopMe.id, (m) => m.state === 'stopped', 'stopped')
  expect(stopped.stateReason).toBe('api: stop while the node was down')
  expect(isRunning(readProcStat(pidOf(stopMe.id)))).toBe(false)
  const stopLog: string[] = []
  for await (const line of readMachineLogs(dir, stopMe.id)) stopLog.push(line)
  expect(stopLog.join('\n')).toContain('app: got SIGINT, exiting')

  // the one removed meanwhile is an orphan: stopped, and its folder cleaned up
  await waitFor(() => !isRunning(readProcStat(pidOf(gone.id))), { what: 'the orphan to exit', timeoutMs: 5000 })
  await waitFor(() => !existsSync(join(dir, 'machines', gone.id)), { what: "the orphan's folder to go", timeoutMs: 5000 })

  await supervisor.stop()
  for (const id of ids) expect(isRunning(readProcStat(pidOf(id)))).toBe(false)
})

test('a pid file whose pid now belongs to another process is not trusted: that process is left alone', async () => {
  const { dir, range, port, catalog, appPath } = await setup()
  const m = await catalog.createMachine({ app: 'web', region: 'ams', node: NODE, spec: { cmd: [process.execPath, appPath], env: {} } })
  // an unrelated process that happens to have the pid the file names (its start time differs)
  const stranger = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore', detached: true })
  await new Promise((resolve) => stranger.once('spawn', resolve))
  pids.push(stranger.pid!)
  cleanup.push(async () => {
    // wait for it to be gone: the survivor check below reads /proc right after, and a signal is not a death
    if (stranger.exitCode !== null || stranger.signalCode !== null) return
    const gone = new Promise((resolve) => stranger.once('exit', resolve))
    stranger.kill('SIGKILL')
    await gone
  })
  const startTime = readProcStat(stranger.pid!)!.startTime
  await mkdir(join(dir, 'machines', m.id), { recursive: true })
  await writeFile(join(dir, 'machines', m.id, 'machine.json'), JSON.stringify({
    machineId: m.id, pid: stranger.pid, startTime: startTime + 1, bootId: bootId(), argv: [process.execPath, appPath],
    privateAddr: range.replace('.0/24', '.9'), killSignal: 'SIGINT', killTimeoutMs: 1000, spawnedAt: Date.now(),
  }))

  const supervisor: MachineSupervisor = machineSupervisor({ dataDir: dir, machineRange: range, ...FAST })({ catalog, log: testLog })
  cleanup.push(async () => { await supervisor.stop(); await catalog.close() })
  await supervisor.start()
  const ready = await waitMachine(catalog, m.id, isReady, 'started fresh')
  const own = supervisor.processes().find((p) => p.machineId === m.id)!
  pids.push(own.pid)
  expect(own).toMatchObject({ adopted: false })
  expect(own.pid).not.toBe(stranger.pid)
  expect(isRunning(readProcStat(stranger.pid!))).toBe(true)
  expect((await request(`http://${ready.privateAddr}:${port}/healthz`)).statusCode).toBe(200)
})
