import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { freePort, haproxyHttpSections, type Proc, requireTools, runComparison, startBackend, startEdge, startHaproxy, startNginx } from './proxy-common.js'

/**
 * TLS-terminated HTTP/1.1 keep-alive small GET through edgeproxy vs nginx `listen ssl` and HAProxy `bind … ssl`
 * (issue 6 and 11 benchmark), all with the same ECDSA P-256 certificate, TLS 1.3, the same backend.
 *
 *   npx tsx bench/proxy-tls.ts [--rounds 4] [--seconds 5] [--connections 50]
 */
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
  },
})

requireTools(['nginx', 'haproxy', 'wrk', 'taskset', 'openssl'])
const dir = mkdtempSync(join(tmpdir(), 'edgeproxy-bench-tls-'))
const BACKEND_ADDR = '127.66.250.3'
const procs: Proc[] = []

try {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=bench.localhost'], { stdio: 'ignore' })
  const backend = await startBackend({ BACKEND_HOST: BACKEND_ADDR, BACKEND_KIND: 'http', BACKEND_BYTES: '11' })
  procs.push(backend)
  const nginxPort = 18680 + (process.pid % 100)
  const nginx = await startNginx(dir, `
  upstream backend { server ${BACKEND_ADDR}:${backend.port}; keepalive 64; }
  server {
    listen 127.0.0.1:${nginxPort} ssl;
    ssl_certificate ${dir}/cert.pem;
    ssl_certificate_key ${dir}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
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
  // HAProxy wants certificate and key in one file
  writeFileSync(join(dir, 'haproxy.pem'), readFileSync(join(dir, 'cert.pem'), 'utf8') + readFileSync(join(dir, 'key.pem'), 'utf8'))
  const haproxyPort = await freePort()
  const haproxy = await startHaproxy(join(dir, 'haproxy'), haproxyPort,
    haproxyHttpSections(`127.0.0.1:${haproxyPort} ssl crt ${join(dir, 'haproxy.pem')} ssl-min-ver TLSv1.2 alpn http/1.1`, `${BACKEND_ADDR}:${backend.port}`, 'https'))
  procs.push(haproxy)
  const edge = await startEdge(`app = "bench"\n[http_service]\ninternal_port = ${backend.port}\n`, [BACKEND_ADDR], { 80: 0, 443: 0 })
  procs.push(edge)

  console.log(runComparison({
    title: `HTTPS (TLS 1.3, ECDSA P-256) keep-alive GET, 11-byte body, wrk -t1 -c${args.connections} -d${args.seconds}s, ${args.rounds} interleaved rounds (medians)`,
    targets: [
      { name: 'nginx', url: `https://127.0.0.1:${nginxPort}/`, pids: () => nginx.workers() },
      { name: 'HAProxy', url: `https://127.0.0.1:${haproxyPort}/`, pids: () => [haproxy.pid] },
      { name: 'edgeproxy', url: `https://127.0.0.1:${edge.bound['443']}/`, pids: () => [edge.pid] },
    ],
    baselines: 2,
    rounds: Number(args.rounds),
    seconds: Number(args.seconds),
    warmup: Number(args.warmup),
    connections: Number(args.connections),
    wrkExtra: ['-H', 'Host: bench.localhost'],
    metric: 'rps',
  }))
} finally {
  for (const p of procs.reverse()) await p.stop()
  rmSync(dir, { recursive: true, force: true })
}
