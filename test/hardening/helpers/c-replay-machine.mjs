// The Machine of the fly-replay-under-load test (issue 11 item 13), run by a worker's supervisor (node
// built-ins only, so it starts fast). It binds FLY_PRIVATE_IP:PORT and keeps a journal of every request
// that carries an `x-req-id`, so the test can tell which Machine executed each request, and how often.
//
//   GET /healthz   200 ok
//   GET /__journal JSON [{ id, kind: 'asked' | 'executed', ... }] of this process (not journaled itself)
//   anything else  with `x-plan`, before the request was replayed (no fly-replay-src / fly-replay-failed):
//                    self          executed here
//                    region        fly-replay: region=iad (executed here when this Machine is in iad)
//                    json          the JSON form to region iad, with a transform that sets x-transformed
//                    instance=ID…  fly-replay: instance=ID… as given, e.g. with ;timeout=25ms;fallback=prefer_self
//                                  (executed here when this is ID)
//                    app           fly-replay: app=other
//                    elsewhere     fly-replay: elsewhere=true
//                    fallback      fly-replay: region=syd;fallback=prefer_self (no Machine there: falls back)
//                  `x-early: 1` answers the replay on the request's headers, before reading its body.
//                  Executed: the body is read and hashed, then after `x-ms` ms the answer is JSON
//                  { id, app, machine, region, method, path, bytes, sha, src, failed, transformed }.
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'

const env = process.env
const me = { app: env.FLY_APP_NAME, machine: env.FLY_MACHINE_ID, region: env.FLY_REGION }
const journal = []

function replayFor(plan) {
  if (plan === 'region') return me.region === 'iad' ? undefined : { header: 'region=iad' }
  if (plan === 'json') {
    return me.region === 'iad' ? undefined : { json: { region: 'iad', transform: { set_headers: [{ name: 'x-transformed', value: 'yes' }] } } }
  }
  if (plan.startsWith('instance=')) return plan.slice('instance='.length).split(';')[0] === me.machine ? undefined : { header: plan }
  if (plan === 'app') return me.app === 'other' ? undefined : { header: 'app=other' }
  if (plan === 'elsewhere') return { header: 'elsewhere=true' }
  if (plan === 'fallback') return { header: 'region=syd;fallback=prefer_self' }
  return undefined
}

function answerReplay(res, r) {
  if (r.header !== undefined) { res.writeHead(200, { 'fly-replay': r.header, 'content-length': 0 }).end(); return }
  const body = JSON.stringify(r.json)
  res.writeHead(200, { 'content-type': 'application/vnd.fly.replay+json', 'content-length': Buffer.byteLength(body) }).end(body)
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://machine')
  if (url.pathname === '/healthz') { res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'); return }
  if (url.pathname === '/__journal') {
    const body = JSON.stringify(journal)
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
    return
  }
  const id = req.headers['x-req-id']
  const src = req.headers['fly-replay-src']
  const failed = req.headers['fly-replay-failed']
  const replayed = src !== undefined || failed !== undefined
  const r = replayed ? undefined : replayFor(String(req.headers['x-plan'] ?? 'self'))
  if (r !== undefined && req.headers['x-early'] === '1') {
    journal.push({ id, kind: 'asked', early: true })
    answerReplay(res, r)
    req.resume()
    return
  }
  const hash = createHash('sha256')
  let bytes = 0
  req.on('data', (c) => { bytes += c.length; hash.update(c) })
  req.on('end', () => {
    const sha = hash.digest('hex')
    if (r !== undefined) {
      journal.push({ id, kind: 'asked', bytes, sha })
      answerReplay(res, r)
      return
    }
    journal.push({ id, kind: 'executed', bytes, sha, src, failed })
    const body = JSON.stringify({
      id, ...me, method: req.method, path: req.url, bytes, sha, src, failed, transformed: req.headers['x-transformed'],
    })
    const answer = () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
    const ms = Number(req.headers['x-ms'] ?? 0)
    if (ms > 0) setTimeout(answer, ms)
    else answer()
  })
})
server.keepAliveTimeout = 5000
// MAX_REQUESTS_PER_SOCKET=N: `connection: close` on every N-th answer of a connection, so the proxy keeps connecting
if (env.MAX_REQUESTS_PER_SOCKET !== undefined) server.maxRequestsPerSocket = Number(env.MAX_REQUESTS_PER_SOCKET)
server.listen(Number(env.PORT ?? 8080), env.FLY_PRIVATE_IP ?? '127.0.0.1')

const stop = () => {
  server.close(() => process.exit(0))
  server.closeIdleConnections()
  setTimeout(() => process.exit(0), 3000).unref()
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
