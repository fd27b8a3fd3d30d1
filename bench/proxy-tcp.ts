import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { freePort, type Proc, requireTools, runComparison, startBackend, startEdge, startHaproxy, startNginx } from './proxy-common.js'

/**
 * Raw TCP throughput (no handlers) through edgeproxy vs nginx `stream` and HAProxy `mode tcp` (issue 6 and 11
 * benchmark): the backend serves 1 MiB HTTP responses and wrk fetches them through the three layer-4 proxies;
 * the ratio is of MB/s.
 *
 *   npx tsx bench/proxy-tcp.ts [--rounds 4] [--seconds 5] [--connections 10] [--bytes 1048576]
 */
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '10' },
    bytes: { type: 'string', default: '1048576' },
  },
})

requireTools(['nginx', 'haproxy', 'wrk', 'taskset'])
const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so'
const dir = mkdtempSync(join(tmpdir(), 'edgeproxy-bench-tcp-'))
const BACKEND_ADDR = '127.66.250.2'
const procs: Proc[] = []

try {
  const backend = await startBackend({ BACKEND_HOST: BACKEND_ADDR, BACKEND_KIND: 'http', BACKEND_BYTES: args.bytes! })
  procs.push(backend)
  const nginxPort = 18580 + (process.pid % 100)
  const nginx = await startNginx(dir, '', `load_module ${STREAM_MODULE};
stream {
  server { listen 127.0.0.1:${nginxPort}; proxy_pass ${BACKEND_ADDR}:${backend.port}; }
}`)
  procs.push(nginx)
  const haproxyPort = await freePort()
  const haproxy = await startHaproxy(join(dir, 'haproxy'), haproxyPort, `listen l4
  mode tcp
  bind 127.0.0.1:${haproxyPort}
  server s1 ${BACKEND_ADDR}:${backend.port}
`)
  procs.push(haproxy)
  const edge = await startEdge(`app = "bench"\n[[services]]\ninternal_port = ${backend.port}\n[[services.ports]]\nport = 9000\nhandlers = []\n`, [BACKEND_ADDR], { 9000: 0 })
  procs.push(edge)

  console.log(runComparison({
    title: `Raw TCP, ${Number(args.bytes) / 1048576} MiB responses through a layer-4 proxy, wrk -t1 -c${args.connections} -d${args.seconds}s, ${args.rounds} interleaved rounds (medians)`,
    targets: [
      { name: 'nginx stream', url: `http://127.0.0.1:${nginxPort}/`, pids: () => nginx.workers() },
      { name: 'HAProxy tcp', url: `http://127.0.0.1:${haproxyPort}/`, pids: () => [haproxy.pid] },
      { name: 'edgeproxy', url: `http://127.0.0.1:${edge.bound['9000']}/`, pids: () => [edge.pid] },
    ],
    baselines: 2,
    rounds: Number(args.rounds),
    seconds: Number(args.seconds),
    warmup: Number(args.warmup),
    connections: Number(args.connections),
    wrkExtra: [],
    metric: 'mbps',
  }))
} finally {
  for (const p of procs.reverse()) await p.stop()
  rmSync(dir, { recursive: true, force: true })
}
