import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { freePort, haproxyHttpSections, type Proc, requireTools, runComparison, startBackend, startEdge, startHaproxy, startNginx } from './proxy-common.js'

/**
 * HTTP/1.1 keep-alive small GET through edgeproxy vs nginx and HAProxy (issue 6 and 11 benchmark, shared/TOOLCHAIN.md
 * §5): one node:http backend, nginx (1 worker, upstream keepalive), HAProxy (1 thread, http-reuse) and edgeproxy
 * in front of it, everything server-side pinned to core 0 and wrk to core 1, rounds interleaved; prints a
 * markdown table of ratios to both baselines.
 *
 *   npx tsx bench/proxy-http.ts [--rounds 4] [--seconds 5] [--warmup 2] [--connections 50] [--bytes 11]
 */
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
    bytes: { type: 'string', default: '11' },
  },
})

requireTools(['nginx', 'haproxy', 'wrk', 'taskset'])
const dir = mkdtempSync(join(tmpdir(), 'edgeproxy-bench-http-'))
const BACKEND_ADDR = '127.66.250.1'
const procs: Proc[] = []

try {
  const backend = await startBackend({ BACKEND_HOST: BACKEND_ADDR, BACKEND_KIND: 'http', BACKEND_BYTES: args.bytes! })
  procs.push(backend)
  const nginxPort = 18480 + (process.pid % 100)
  const nginx = await startNginx(dir, `
  upstream backend { server ${BACKEND_ADDR}:${backend.port}; keepalive 64; }
  server {
    listen 127.0.0.1:${nginxPort};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Port $server_port;
    }
  }`)
  procs.push(nginx)
  const haproxyPort = await freePort()
  const haproxy = await startHaproxy(join(dir, 'haproxy'), haproxyPort, haproxyHttpSections(`127.0.0.1:${haproxyPort}`, `${BACKEND_ADDR}:${backend.port}`, 'http'))
  procs.push(haproxy)
  const edge = await startEdge(`app = "bench"\n[[services]]\ninternal_port = ${backend.port}\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`, [BACKEND_ADDR], { 80: 0 })
  procs.push(edge)

  console.log(runComparison({
    title: `HTTP/1.1 keep-alive GET through nginx, HAProxy and edgeproxy, ${args.bytes}-byte body, wrk -t1 -c${args.connections} -d${args.seconds}s, ${args.rounds} interleaved rounds (medians)`,
    targets: [
      { name: 'nginx', url: `http://127.0.0.1:${nginxPort}/`, pids: () => nginx.workers() },
      { name: 'HAProxy', url: `http://127.0.0.1:${haproxyPort}/`, pids: () => [haproxy.pid] },
      { name: 'edgeproxy', url: `http://127.0.0.1:${edge.bound['80']}/`, pids: () => [edge.pid] },
    ],
    baselines: 2,
    rounds: Number(args.rounds),
    seconds: Number(args.seconds),
    warmup: Number(args.warmup),
    connections: Number(args.connections),
    // edgeproxy routes by Host; nginx and HAProxy ignore it
    wrkExtra: ['-H', 'Host: bench.localhost'],
    metric: 'rps',
  }))
} finally {
  for (const p of procs.reverse()) await p.stop()
  rmSync(dir, { recursive: true, force: true })
}
