import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'

/**
 * Shared parts of the proxy benchmarks (issue 6): processes pinned as shared/TOOLCHAIN.md §5 says —
 * backend and proxy on core 0, wrk on core 1 — and CPU time per request read from /proc.
 */
export const SERVER_CORE = '0'
export const LOAD_CORE = '1'

export function which(cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

export function requireTools(tools: string[]): void {
  const missing = tools.filter((t) => which(t) === undefined)
  if (missing.length > 0) {
    console.error(`missing: ${missing.join(', ')}; install with: apt-get install -y --no-install-recommends ${missing.join(' ')}`)
    process.exit(2)
  }
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

/**
 * argv to run bench/NAME as a child: the built file when this code runs built (`npm run bench`), through
 * tsx when it runs from source (`npx tsx bench/….ts`), so a run never mixes built and stale code.
 */
export function benchEntry(name: string): string[] {
  return import.meta.url.endsWith('.js') ? [join(import.meta.dirname, `${name}.js`)] : ['--import', 'tsx', join(import.meta.dirname, `${name}.ts`)]
}

export interface Proc {
  child: ChildProcess
  pid: number
  /** The stdout line that contained readyText (e.g. `ready 41234`). */
  readyLine: string
  stop(): Promise<void>
}

/** Starts a pinned child and resolves when `readyText` appears on stdout (or the port accepts). */
export function startPinned(core: string, cmd: string, args: string[], opts: { readyText?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', ['-c', core, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, cwd: opts.cwd })
    let out = ''
    let err = ''
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${cmd} did not become ready: ${out}${err}`)) }, 30_000)
    const proc: Proc = {
      child,
      pid: child.pid!,
      readyLine: '',
      stop: () => new Promise<void>((res) => {
        if (child.exitCode !== null || child.signalCode !== null) { res(); return }
        child.once('exit', () => res())
        child.kill('SIGTERM')
        setTimeout(() => child.kill('SIGKILL'), 5000).unref()
      }),
    }
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (opts.readyText !== undefined && proc.readyLine === '' && out.includes(opts.readyText)) {
        const line = out.split('\n').find((l) => l.includes(opts.readyText!))
        if (line === undefined || !out.includes(`${line}\n`)) return // wait for the whole line
        proc.readyLine = line
        clearTimeout(timer)
        resolve(proc)
      }
    })
    child.stderr!.on('data', (d: Buffer) => { err += d.toString() })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${cmd} exited with ${code}: ${out}${err}`)) })
    if (opts.readyText === undefined) { clearTimeout(timer); resolve(proc) }
  })
}

/** utime + stime of a process and its threads, in µs. */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1e6) / 100 // USER_HZ is 100 on Linux
}

export function childPids(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

export interface WrkResult {
  rps: number
  requests: number
  p50ms: number
  p99ms: number
  mbPerSec: number
  errors: number
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v.trim())
  if (m === null) return Number.NaN
  const n = Number(m[1])
  return m[2] === 'us' ? n / 1000 : m[2] === 's' ? n * 1000 : n
}

function toMB(v: string): number {
  const m = /^([\d.]+)([KMG]?B)$/.exec(v.trim())
  if (m === null) return Number.NaN
  const n = Number(m[1])
  return m[2] === 'KB' ? n / 1024 : m[2] === 'GB' ? n * 1024 : m[2] === 'B' ? n / 1048576 : n
}

export function runWrk(url: string, seconds: number, connections = 50, extra: string[] = []): WrkResult {
  const out = execFileSync('taskset', ['-c', LOAD_CORE, 'wrk', '-t1', `-c${connections}`, `-d${seconds}s`, '--latency', ...extra, url], { encoding: 'utf8' })
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN)
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? Number.NaN)
  const p50 = toMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? '')
  const p99 = toMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? '')
  const mb = toMB(/Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? '')
  const errs = /Non-2xx or 3xx responses: (\d+)/.exec(out)
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  const errors = Number(errs?.[1] ?? 0) + (sockErr === null ? 0 : Number(sockErr[1]) + Number(sockErr[2]) + Number(sockErr[3]) + Number(sockErr[4]))
  return { rps, requests, p50ms: p50, p99ms: p99, mbPerSec: mb, errors }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** nginx with the baseline config of shared/TOOLCHAIN.md (appendix), plus the variants the benches need. */
export async function startNginx(dir: string, httpBlock: string, extraTop = ''): Promise<Proc & { workers: () => number[] }> {
  mkdirSync(join(dir, 'logs'), { recursive: true })
  // load_module must come first; the rest of extraTop (a stream block) goes after events
  const modules = extraTop.split('\n').filter((l) => l.startsWith('load_module')).join('\n')
  const rest = extraTop.split('\n').filter((l) => !l.startsWith('load_module')).join('\n')
  const conf = `${modules}
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 4096; }
${rest}
http {
  access_log off;
  client_body_temp_path ${dir}/tmp_body;
  proxy_temp_path ${dir}/tmp_proxy;
  fastcgi_temp_path ${dir}/tmp_fastcgi;
  uwsgi_temp_path ${dir}/tmp_uwsgi;
  scgi_temp_path ${dir}/tmp_scgi;
${httpBlock}
}
`
  writeFileSync(join(dir, 'nginx.conf'), conf)
  const proc = await startPinned(SERVER_CORE, 'nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')])
  // nginx prints nothing when ready: wait for its worker
  for (let i = 0; i < 100 && childPids(proc.pid).length === 0; i++) await new Promise((r) => setTimeout(r, 50))
  return {
    ...proc,
    workers: () => childPids(proc.pid),
    stop: () => new Promise<void>((res) => {
      if (proc.child.exitCode !== null) { res(); return }
      proc.child.once('exit', () => res())
      proc.child.kill('SIGQUIT')
      setTimeout(() => proc.child.kill('SIGKILL'), 5000).unref()
    }),
  }
}

export function markdownTable(header: string[], rows: Array<Array<string | number>>): string {
  const line = (cells: Array<string | number>): string => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

export interface BenchTarget {
  name: string
  url: string
  /** Processes whose CPU time counts as the proxy's. */
  pids(): number[]
}

export interface ComparisonOptions {
  targets: BenchTarget[]
  /** The first `baselines` targets (default 1) are baselines (nginx, HAProxy): every row gets a ratio to each. */
  baselines?: number
  rounds: number
  seconds: number
  warmup: number
  connections: number
  wrkExtra: string[]
  /** Ratio of req/s (small requests) or of MB/s (bulk transfer). */
  metric: 'rps' | 'mbps'
  title: string
}

/** Interleaved rounds (order alternates) of wrk against every target; prints a markdown table of medians. */
export function runComparison(o: ComparisonOptions): string {
  const results = new Map<string, Array<WrkResult & { cpuPerReq: number; cpuPerMiB: number }>>()
  for (const t of o.targets) runWrk(t.url, o.warmup, o.connections, o.wrkExtra)
  for (let r = 0; r < o.rounds; r++) {
    const order = r % 2 === 0 ? o.targets : [...o.targets].reverse()
    for (const t of order) {
      const pids = t.pids()
      const before = pids.reduce((s, p) => s + cpuMicros(p), 0)
      const res = runWrk(t.url, o.seconds, o.connections, o.wrkExtra)
      const cpu = pids.reduce((s, p) => s + cpuMicros(p), 0) - before
      const list = results.get(t.name) ?? []
      list.push({ ...res, cpuPerReq: cpu / Math.max(1, res.requests), cpuPerMiB: cpu / Math.max(1e-9, res.mbPerSec * o.seconds) })
      results.set(t.name, list)
      process.stderr.write(`round ${r + 1} ${t.name}: ${res.rps.toFixed(0)} req/s, ${res.mbPerSec.toFixed(1)} MB/s, p99 ${res.p99ms} ms, errors ${res.errors}\n`)
    }
  }
  const value = (x: WrkResult): number => (o.metric === 'rps' ? x.rps : x.mbPerSec)
  const bases = o.targets.slice(0, o.baselines ?? 1).map((b) => ({ name: b.name, v: median(results.get(b.name)!.map(value)) }))
  const rows = o.targets.map((t) => {
    const list = results.get(t.name)!
    const v = median(list.map(value))
    return [
      t.name,
      median(list.map((x) => x.rps)).toFixed(0),
      median(list.map((x) => x.mbPerSec)).toFixed(1),
      ...bases.map((b) => (v / b.v).toFixed(2)),
      median(list.map((x) => x.p50ms)).toFixed(2),
      median(list.map((x) => x.p99ms)).toFixed(2),
      o.metric === 'rps' ? median(list.map((x) => x.cpuPerReq)).toFixed(1) : median(list.map((x) => x.cpuPerMiB)).toFixed(0),
      list.reduce((s, x) => s + x.errors, 0),
    ]
  })
  const cpuHeader = o.metric === 'rps' ? 'proxy CPU µs/req' : 'proxy CPU µs/MiB'
  const ratioHeaders = bases.map((b) => `${o.metric === 'rps' ? 'req/s' : 'MB/s'} ÷ ${b.name}`)
  return `\n${o.title}\n\n${markdownTable(['proxy', 'req/s', 'MB/s', ...ratioHeaders, 'p50 ms', 'p99 ms', cpuHeader, 'errors'], rows)}\n`
}

/** Resolves once host:port accepts a TCP connection (servers that print nothing when ready). */
export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port })
      const timer = setTimeout(() => { s.destroy(); resolve(false) }, 1000)
      s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve(true) })
      s.once('error', () => { clearTimeout(timer); resolve(false) })
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing accepted connections on ${host}:${port} within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/**
 * HAProxy as the second baseline: one process, one thread (`nbthread 1`, as nginx has one worker), pinned
 * to the server core, in the foreground (`-db`), with `sections` (frontends and backends) after a common
 * global/defaults block. Resolves once `port` accepts connections.
 */
export async function startHaproxy(dir: string, port: number, sections: string): Promise<Proc> {
  mkdirSync(dir, { recursive: true })
  const conf = `global
  nbthread 1
  maxconn 8192
  pidfile ${dir}/haproxy.pid
  tune.ssl.default-dh-param 2048
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  maxconn 8192
${sections}
`
  writeFileSync(join(dir, 'haproxy.cfg'), conf)
  const proc = await startPinned(SERVER_CORE, 'haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')])
  try {
    await waitForPort(port)
  } catch (err) {
    await proc.stop()
    throw err
  }
  return proc
}

/** HAProxy sections for an HTTP reverse proxy with server-side keep-alive and nginx's three forwarding headers. */
export function haproxyHttpSections(bind: string, backend: string, proto: 'http' | 'https'): string {
  return `frontend fe
  mode http
  bind ${bind}
  option http-keep-alive
  option forwardfor
  http-request set-header X-Forwarded-Proto ${proto}
  http-request set-header X-Forwarded-Port %[dst_port]
  default_backend be
backend be
  mode http
  http-reuse always
  server s1 ${backend} maxconn 1000
`
}

/** Starts the edgeproxy side (bench/proxy-edge-main.ts) pinned to the server core; returns bound ports. */
export async function startEdge(toml: string, machines: string[], ports: Record<number, number>): Promise<Proc & { bound: Record<string, number> }> {
  const edge = await startPinned(SERVER_CORE, process.execPath, benchEntry('proxy-edge-main'), {
    readyText: 'ready',
    env: { BENCH_TOML: toml, BENCH_MACHINES: machines.join(','), BENCH_PORTS: JSON.stringify(ports) },
  })
  return { ...edge, bound: JSON.parse(edge.readyLine.slice(6)) as Record<string, number> }
}

export async function startBackend(env: Record<string, string>): Promise<Proc & { port: number }> {
  const backend = await startPinned(SERVER_CORE, process.execPath, benchEntry('proxy-backend-main'), { readyText: 'ready', env })
  return { ...backend, port: Number(backend.readyLine.slice(6)) }
}
