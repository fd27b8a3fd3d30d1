import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { DaemonFleet, metric } from './helpers/daemon-fleet.js'
import { failures, type Outcome, percentileMs, startTraffic } from './helpers/traffic.js'

/**
 * Issue 11 item 8: slowhttptest (the real tool) against a real daemon — slowloris (heads that never end),
 * R-U-Dead-Yet (bodies a byte every few seconds) and slow reads (a receive window of a few bytes) — while
 * an honest client keeps requesting the same app. The honest client must keep being served, at the latency
 * it saw before the attack (within a margin: two cores are shared by the attacker, the proxy and the app).
 */
const MACHINE = join(import.meta.dirname, 'fixtures', 'hard-machine.mjs')
const ATTACK_SECONDS = Number(process.env.HARDENING_SLOW_SECONDS ?? 15)
const fleet = new DaemonFleet()
let origin = ''

beforeAll(async () => {
  await fleet.init()
  await fleet.start({ name: 'ams-1', region: 'ams', roles: 'edge,worker', extra: ['--no-fsync'] })
  // slowhttptest sends Host: 127.0.0.1:PORT, so the app answers to that name too
  const res = await request(`${fleet.node('ams-1').api}/v1/apps/web?hostnames=127.0.0.1`, {
    method: 'PUT', headers: { 'content-type': 'text/plain' },
    body: `app = "web"\n[[services]]\ninternal_port = 8080\n[services.concurrency]\ntype = "requests"\nsoft_limit = 2000\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n[[services.http_checks]]\npath = "/healthz"\ninterval = "1s"\ntimeout = "1s"\ngrace_period = "0s"\n`,
  })
  expect(res.statusCode).toBe(201)
  await res.body.dump()
  const m = await fleet.machine('ams-1', 'web', { node: 'ams-1', cmd: [process.execPath, MACHINE] })
  await fleet.waitMachine('ams-1', m.id, (x) => x.state === 'started' && x.ready, 'started and ready')
  origin = `http://127.0.0.1:${await fleet.publicPort('ams-1', 80)}`
}, 120_000)

afterAll(async () => { await fleet.stopAll() }, 60_000)

/** slowhttptest with its CSV of socket states; resolves with its last line (connected, closed, …). */
function slowhttptest(mode: string, connections: number, extra: string[], prefix: string): Promise<{ stdout: string; csv: string }> {
  return new Promise((resolve, reject) => {
    const url = extra.includes('SIZED') ? `${origin}/?size=1000000` : `${origin}/`
    const args = extra.filter((a) => a !== '-u' && a !== 'SIZED')
    execFile('slowhttptest', [mode, '-c', String(connections), '-r', mode === '-X' ? '100' : '250', '-i', '3', '-l', String(ATTACK_SECONDS), '-p', '3', '-g', '-o', prefix,
      '-u', url, ...args], { timeout: (ATTACK_SECONDS + 60) * 1000, maxBuffer: 32 * 1024 * 1024 }, (err, stdout) => {
      if (err !== null && (err as { killed?: boolean }).killed === true) { reject(err); return }
      readFile(`${prefix}.csv`, 'utf8').then((csv) => resolve({ stdout: String(stdout), csv }), reject)
    })
  })
}

/** Honest traffic: 4 keep-alive loops plus one loop that opens a new connection for every request. */
function honest(): { stop: () => Promise<Outcome[]> } {
  const keepAlive = startTraffic({ origin, host: 'web.localhost', concurrency: 4, gapMs: 20 })
  const fresh = startTraffic({ origin, host: 'web.localhost', concurrency: 1, gapMs: 20, path: (i) => `/fresh-${i}` })
  return { stop: async () => [...await keepAlive.stop(), ...await fresh.stop()] }
}

/** Max connections slowhttptest held open at once, from its CSV (columns: seconds, closed, pending, connected, available). */
function peakConnected(csv: string): number {
  let peak = 0
  for (const line of csv.trim().split('\n').slice(1)) peak = Math.max(peak, Number(line.split(',')[3]))
  return peak
}

// Slow readers: 500 connections opened at 100/s, not 1000 at 250/s. Each holds its 1 MB answer in the
// kernel's send buffer (TCP autotuning grows it on loopback), which the proxy must write there as any proxy
// does: 1000 of them put ~2 GB into socket buffers (past this host's default tcp_mem pressure threshold, where
// the kernel slows every socket on the machine), and 250 new ones a second is a 250 MB/s download flood — a
// bandwidth attack, not a slow-read one. One request per connection (`-k 1`), for the same reason: with
// slowhttptest's pipelining (`-k 3`) each connection got three answers into the kernel, and 500 of them held
// 1.7 GB of socket memory (/proc/net/sockstat, truesize) — past tcp_mem's pressure threshold on a 24 GiB host
// (1.5 GB), where the kernel slows every socket and the test measured the host, not the proxy (honest p99 90–118
// ms, against 46 ms with 1.17 GB held). What is tested is that held, unread answers cost neither memory nor
// other clients' latency.
for (const [mode, name, connections, extra] of [
  ['-H', 'slowloris (heads that never end)', 1000, []],
  ['-B', 'slow bodies (a byte every 3 s, Content-Length 100000)', 1000, ['-s', '100000']],
  ['-X', 'slow readers of 1 MB answers (a 1–8 byte receive window)', 500, ['-k', '1', '-n', '1', '-w', '1', '-y', '8', '-z', '4', '-u', 'SIZED']],
] as const) {
  test(`${name}: honest clients are still served at their usual latency`, async () => {
    const base = honest()
    await new Promise((r) => setTimeout(r, 3000))
    const baseline = await base.stop()
    const during = honest()
    const attack = await slowhttptest(mode, connections, [...extra], join(fleet.dir.path, `slow${mode.slice(1)}`))
    const outcomes = await during.stop()
    const peak = peakConnected(attack.csv)
    const rssMb = await daemonRssMb()
    const metrics = await (await request(`${fleet.node('ams-1').api}/metrics`)).body.text()
    console.log(`${name}: ${outcomes.length} honest requests, p50/p99 ${percentileMs(baseline, 50).toFixed(1)}/${percentileMs(baseline, 99).toFixed(1)} ms before, ${percentileMs(outcomes, 50).toFixed(1)}/${percentileMs(outcomes, 99).toFixed(1)} ms during; attacker held up to ${peak} connections; daemon RSS ${rssMb} MB; 408s so far ${metric(metrics, 'edgeproxy_proxy_client_errors_total', { code: 'EP_REQUEST_TIMEOUT' })}`)

    // the attack was real: hundreds of connections held open at once
    expect(peak).toBeGreaterThan(300)
    expect(failures(outcomes)).toEqual([])
    expect(outcomes.length).toBeGreaterThan(100)
    expect(percentileMs(outcomes, 50)).toBeLessThan(Math.max(3 * percentileMs(baseline, 50), 10))
    expect(percentileMs(outcomes, 99)).toBeLessThan(Math.max(5 * percentileMs(baseline, 99), 100))
    // back-pressure, not buffering: a thousand stalled 1 MB answers are not held in the proxy's memory
    expect(rssMb).toBeLessThan(400)
  }, (ATTACK_SECONDS + 90) * 1000)
}

/** Resident memory of the daemon process, from /proc. */
async function daemonRssMb(): Promise<number> {
  const status = await readFile(`/proc/${fleet.node('ams-1').daemon.child.pid}/status`, 'utf8')
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024)
}
