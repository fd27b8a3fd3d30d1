import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { DAEMON_NODE_FLAGS } from '../tools/node-flags.js'
import { packageRoot } from '../tools/version.js'
import { SERVER_CORE } from './proxy-common.js'

/**
 * The real fleet of bench/soak.ts: `edgeproxy daemon` child processes from the built CLI (bin/edgeproxy.js),
 * pinned to the server core (their Machines inherit the pin), and the /proc probes the soak samples.
 */
export const BIN = join(packageRoot(), 'bin', 'edgeproxy.js')

export function runCli(args: string[]): string {
  return execFileSync(process.execPath, [BIN, ...args], { cwd: packageRoot(), encoding: 'utf8', timeout: 30_000 })
}

export interface DaemonSpec {
  name: string
  region: string
  roles: string
  args: string[]
}

/** One daemon process; `start()` again after `stop()` restarts it from the same data dir and flags. */
export class Daemon {
  child?: ChildProcess
  admin = ''
  /** Public port → bound port, from the "public listener open" log lines. */
  readonly publicPorts = new Map<number, number>()
  private tail: string[] = []
  private exited?: Promise<number | null>

  constructor(readonly spec: DaemonSpec) {}

  get pid(): number { return this.child!.pid! }
  get running(): boolean { return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null }
  get api(): string { return `http://${this.admin}` }
  logTail(): string { return this.tail.join('\n') }

  async start(timeoutMs = 30_000): Promise<void> {
    const child = spawn('taskset', ['-c', SERVER_CORE, process.execPath, ...DAEMON_NODE_FLAGS, BIN, 'daemon', '--name', this.spec.name, '--region', this.spec.region, '--roles', this.spec.roles, ...this.spec.args],
      { cwd: packageRoot(), stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    this.admin = ''
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)))
    let partial = ''
    const started = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.spec.name} did not start within ${timeoutMs} ms:\n${this.logTail()}`)), timeoutMs)
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${this.spec.name} exited with ${code} before starting:\n${this.logTail()}`)) })
      child.stdout!.on('data', (d: Buffer) => {
        const lines = (partial + d.toString()).split('\n')
        partial = lines.pop()!
        for (const line of lines) {
          this.keep(line)
          if (line.includes('"node started"')) {
            this.admin = (JSON.parse(line) as { admin: string }).admin
            clearTimeout(timer)
            resolve()
          } else if (line.includes('"public listener open"')) {
            const rec = JSON.parse(line) as { port: number; bind: string }
            this.publicPorts.set(rec.port, Number(rec.bind.split(':').pop()))
          }
        }
      })
    })
    child.stderr!.on('data', (d: Buffer) => { for (const line of d.toString().split('\n')) if (line !== '') this.keep(`stderr: ${line}`) })
    await started
  }

  private keep(line: string): void {
    this.tail.push(line)
    if (this.tail.length > 200) this.tail = this.tail.slice(-100)
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when it was killed). */
  async stop(graceMs = 20_000): Promise<number | null> {
    if (this.child === undefined || !this.running) return this.child?.exitCode ?? null
    this.child.kill('SIGTERM')
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), graceMs)
    const code = await this.exited!
    clearTimeout(timer)
    return code
  }

  async getJson<T>(path: string): Promise<T> {
    const res = await request(`${this.api}${path}`, { headersTimeout: 5000, bodyTimeout: 5000 })
    const text = await res.body.text()
    if (res.statusCode !== 200) throw new Error(`${this.spec.name} ${path}: ${res.statusCode} ${text}`)
    return JSON.parse(text) as T
  }

  async send<T>(method: 'PUT' | 'POST', path: string, body: string, contentType: string): Promise<T> {
    const res = await request(`${this.api}${path}`, { method, body, headers: { 'content-type': contentType }, headersTimeout: 10_000, bodyTimeout: 10_000 })
    const text = await res.body.text()
    if (res.statusCode >= 300) throw new Error(`${this.spec.name} ${method} ${path}: ${res.statusCode} ${text}`)
    return JSON.parse(text) as T
  }

  /** A Prometheus sample from /metrics (NaN when the API does not answer, e.g. during a restart). */
  async metric(name: string): Promise<number> {
    try {
      const res = await request(`${this.api}/metrics`, { headersTimeout: 5000, bodyTimeout: 5000 })
      const text = await res.body.text()
      const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text)
      return m === null ? Number.NaN : Number(m[1])
    } catch {
      return Number.NaN
    }
  }
}

/** Polls `probe` until it returns something other than undefined; throws naming `what` after `timeoutMs`. */
export async function waitFor<T>(probe: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await Promise.resolve(probe()).catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, intervalMs))
  }
}

export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? Number.NaN : Number(m[1]) * 1024
  } catch {
    return Number.NaN
  }
}

export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return Number.NaN
  }
}

/** Pids of live processes whose command line contains `marker` (the soak's Machines carry a unique tag). */
export function processesWith(marker: string): number[] {
  const out: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'latin1')
      if (cmdline.includes(marker) && !readFileSync(`/proc/${entry}/stat`, 'latin1').includes(') Z ')) out.push(Number(entry))
    } catch { /* exited meanwhile */ }
  }
  return out
}

/** host:port of every TCP socket in LISTEN state (/proc/net/tcp, IPv4). */
export function listeningSockets(): string[] {
  const out: string[] = []
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 4 || f[3] !== '0A') continue
    const [hexIp, hexPort] = f[1].split(':')
    const ip = [3, 2, 1, 0].map((i) => parseInt(hexIp.slice(i * 2, i * 2 + 2), 16)).join('.')
    out.push(`${ip}:${parseInt(hexPort, 16)}`)
  }
  return out
}

/** Least-squares slope of y over x. */
export function slope(points: Array<[number, number]>): number {
  const n = points.length
  if (n < 2) return Number.NaN
  const mx = points.reduce((s, [x]) => s + x, 0) / n
  const my = points.reduce((s, [, y]) => s + y, 0) / n
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0)
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0)
  return sxx === 0 ? Number.NaN : sxy / sxx
}
