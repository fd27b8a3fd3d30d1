import type { Socket } from 'node:net'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { ConnectFacts, MachineReadSink } from '../machine-connector.js'
import type { ClientInfo, ListenerState, ProxyContext, Session } from '../proxy-context.js'
import { newRequestId } from '../request-id.js'
import type { RoutingHints } from '../routing/balancer.js'
import { routeForHost } from '../routing/resolve-route.js'
import type { RouteWaiter } from '../routing/router.js'
import type { Candidate, PortRoute } from '../routing/service-route.js'
import { countError } from '../stats.js'
import { pgErrorResponse } from './pg-tls.js'

/** A byte stream to a Machine: raw TCP, TLS-terminated TCP, proxy_proto, pg_tls after its handshake. */
export interface StreamCtx {
  readonly id: string
  readonly startedAt: number
  readonly client: Socket
  readonly info: ClientInfo
  readonly listener: ListenerState
  /** How errors are shown before closing: Postgres clients understand an ErrorResponse. */
  readonly dialect: 'raw' | 'postgres'
  route?: PortRoute
  cand?: Candidate
  upstream?: Socket
  /** performance.now() at accept and when the Machine connection opened (metrics, request log). */
  t0: number
  tConnected: number
  error?: EdgeProxyError
  closed: boolean
  /** Machine → client bytes without a Buffer per read, on direct connections (forwardSink). */
  readonly sink: MachineReadSink
}

/** One Machine retry when the first refuses (issue 6, FLY-SPEC §3 step 7). */
const MAX_ATTEMPTS = 2

/** route → connect → forward → finish for a stream (DESIGN §4); never throws. */
export async function handleStream(client: Socket, info: ClientInfo, listener: ListenerState, dialect: StreamCtx['dialect'], deps: ProxyContext): Promise<void> {
  const ctx: StreamCtx = { id: newRequestId(deps.region), startedAt: Date.now(), t0: performance.now(), tConnected: 0, client, info, listener, dialect, closed: false, sink: forwardSink(client) }
  const session = streamSession(ctx, deps)
  try {
    const route = routeStream(ctx, deps)
    const upstream = await connectWithRetry(ctx, route, deps)
    await forward(ctx, upstream, deps)
  } catch (err) {
    ctx.error = EdgeProxyError.from(err)
  } finally {
    finish(ctx, deps, session)
  }
}

function streamSession(ctx: StreamCtx, deps: ProxyContext): Session {
  const session: Session = {
    sweep() { /* no idle timeout on streams (FLY-SPEC §4: Fly removed it in 2023) */ },
    drain() { /* a stream has no message boundary: it runs until the drain deadline */ },
    destroy() { ctx.client.destroy(); ctx.upstream?.destroy() },
  }
  deps.sessions.add(session)
  ctx.client.once('close', () => { ctx.closed = true })
  return session
}

/** SNI names the app on shared TLS ports; a plaintext stream port belongs to its only app. */
function routeStream(ctx: StreamCtx, deps: ProxyContext): PortRoute {
  const route = routeForHost(deps.index, ctx.listener, ctx.info.servername?.toLowerCase() ?? '', false)
  if (route instanceof EdgeProxyError) throw route
  ctx.route = route
  return route
}

/** Waits for a Machine (the queue may hold it) and leases one unit of its connection load. */
function lease(ctx: StreamCtx, route: PortRoute, hints: RoutingHints | undefined, deps: ProxyContext): Promise<Candidate> {
  return new Promise((resolve, reject) => {
    const waiter: RouteWaiter = {
      requestId: ctx.id,
      routed(result) {
        ctx.client.removeListener('close', onClose)
        if (result instanceof EdgeProxyError) { reject(result); return }
        if (ctx.closed) { deps.router.release(result.cell); reject(new EdgeProxyError('EP_BAD_REQUEST', 'client went away')); return }
        resolve(result)
      },
    }
    const onClose = (): void => {
      deps.router.cancel(route.service, waiter)
      reject(new EdgeProxyError('EP_BAD_REQUEST', 'client went away while waiting for a Machine'))
    }
    ctx.client.once('close', onClose)
    const picked = deps.router.route(route.service, hints, waiter)
    if (picked !== undefined) waiter.routed(picked)
  })
}

function connectOnce(cand: Candidate, port: number, facts: ConnectFacts, deps: ProxyContext): Promise<Socket> {
  deps.stats.upstreamConnects++
  return new Promise((resolve, reject) => {
    deps.connector.connect(cand.machine, port, (err, socket) => {
      if (err !== undefined || socket === undefined) { deps.stats.upstreamConnectFailures++; reject(err); return }
      resolve(socket)
    }, facts)
  })
}

/** connect: the Machine, or once more another one when it refuses (nothing was sent yet). */
async function connectWithRetry(ctx: StreamCtx, route: PortRoute, deps: ProxyContext): Promise<Socket> {
  const exclude = new Set<string>()
  let lastError: EdgeProxyError | undefined
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    let cand: Candidate
    try {
      cand = await lease(ctx, route, exclude.size > 0 ? { exclude } : undefined, deps)
    } catch (err) {
      if (lastError !== undefined && EdgeProxyError.is(err, 'EP_NO_HEALTHY_MACHINE')) throw lastError
      throw err
    }
    ctx.cand = cand
    try {
      // the PROXY header is written by whoever connects to the Machine: here, or the worker across the backhaul
      const facts: ConnectFacts = { client: ctx.info, proxyProto: route.port.proxy_proto_options?.version, reqId: ctx.id, readSink: ctx.sink }
      const upstream = await connectOnce(cand, route.service.config.internal_port, facts, deps)
      if (ctx.closed) { upstream.destroy(); throw new EdgeProxyError('EP_BAD_REQUEST', 'client went away') }
      return upstream
    } catch (err) {
      lastError = EdgeProxyError.from(err)
      deps.router.release(cand.cell)
      ctx.cand = undefined
      exclude.add(cand.machine.id)
      if (ctx.closed) throw lastError
      deps.stats.retries++
    }
  }
  throw lastError ?? new EdgeProxyError('EP_MACHINE_UNREACHABLE', 'no Machine accepted the connection')
}

/** forward: bytes both ways with half-close (the PROXY header went first at connect), until both ends close. */
function forward(ctx: StreamCtx, upstream: Socket, deps: ProxyContext): Promise<void> {
  ctx.upstream = upstream
  ctx.tConnected = performance.now()
  deps.stats.streamsForwarded++
  const client = ctx.client
  if (ctx.closed) upstream.destroy() // the client left while we connected
  return new Promise((resolve) => {
    let open = 2
    const closed = (): void => { if (--open === 0) resolve() }
    upstream.once('close', closed)
    if (ctx.closed) closed()
    else client.once('close', closed)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    // a reset on one side resets the other; a FIN is passed on as a FIN (pipe ends the destination)
    upstream.on('close', () => { if (!client.writableEnded) client.destroySoon() })
    client.pipe(upstream)
    if (ctx.sink.socket === upstream) upstream.once('end', () => client.end()) // the sink copies; a FIN follows
    else upstream.pipe(client)
    client.resume()
  })
}

/**
 * forward, Machine → client, on a direct connection: each read lands in the connection's one buffer and is
 * written to the client at once. A write the kernel takes whole leaves the buffer free for the next read;
 * one it does not (the client is slow) still holds the buffer, so reading stops until that write is done —
 * the same back-pressure as pipe(), without a new Buffer per read.
 */
function forwardSink(client: Socket): MachineReadSink {
  const sink: MachineReadSink = {
    callback(n, buf) {
      if (client.destroyed) return false
      client.write(buf.subarray(0, n), (err) => { if (err == null && sink.socket?.isPaused() === true) sink.socket.resume() })
      if (client.writableLength === 0) return true
      sink.socket?.pause()
      return false
    },
  }
  return sink
}

function finish(ctx: StreamCtx, deps: ProxyContext, session: Session): void {
  deps.sessions.delete(session)
  const m = ctx.cand?.machine
  // a stream has no status: a forwarded one counts as 200, a refused one as its error's status
  const handler = ctx.dialect === 'postgres' ? 'pg_tls' : ctx.info.tls ? 'tls' : 'tcp'
  deps.requests.finished(ctx.route?.service.app ?? '-', handler, ctx.error?.status ?? 200, m?.id, m?.region, ctx.id, ctx.t0, ctx.tConnected, 0, performance.now(), ctx.client.bytesWritten)
  if (ctx.cand !== undefined) { deps.router.release(ctx.cand.cell); ctx.cand = undefined }
  const err = ctx.error
  if (err !== undefined) {
    countError(deps.stats.routeErrors, err.code)
    if (err.status >= 500) deps.log.debug({ err, reqId: ctx.id, port: ctx.listener.publicPort }, 'stream failed')
    if (!ctx.closed) {
      if (ctx.dialect === 'postgres') ctx.client.end(pgErrorResponse('08006', `${err.code}: ${err.message} (request id ${ctx.id})`))
      else ctx.client.destroy()
    }
    ctx.upstream?.destroy()
  }
}
