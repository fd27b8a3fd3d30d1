import { EdgeProxyError, type ErrorCode } from '../../schemas/errors.js'
import type { RequestHead } from '../http/request-head.js'
import type { RoutingIndex } from '../routing/routing-index.js'
import type { KeptBody } from './kept-body.js'
import { MAX_REPLAYS, type ReplayDirective } from './replay-directive.js'
import { type ReplayFailure, replayFailedLine, replaySrcLine, nowMicros } from './replay-lines.js'
import { planReplay, readDirective, replayOrigin, type ReplaySource, type ReplayTarget } from './replay-plan.js'
import { transformPairs, transformRequest } from './replay-transform.js'

/** A response the relay held back because it asked for a replay. */
export interface HeldReplay {
  /** The `fly-replay` header value, if any. */
  readonly header: string | undefined
  /** Its content type is application/vnd.fly.replay+json: the body is the directive. */
  readonly json: boolean
  /** The JSON body (undefined when over the directive limit or not JSON). */
  readonly body: Buffer | undefined
}

/** Which failures of a replay attempt count as "no target" (FLY-SPEC §6), and the reason they give. */
const FAILURE_REASON: Partial<Record<ErrorCode, ReplayFailure>> = {
  EP_REPLAY_TIMEOUT: 'timeout',
  EP_AUTOSTART_TIMEOUT: 'timeout',
  EP_MACHINE_UNREACHABLE: 'retries_exhausted',
  EP_MACHINE_RESET: 'retries_exhausted',
  EP_MACHINE_TIMEOUT: 'retries_exhausted',
  EP_BACKHAUL_UNREACHABLE: 'retries_exhausted',
  EP_NO_HEALTHY_MACHINE: 'no_candidate',
  EP_CAPACITY: 'no_candidate',
  EP_AUTOSTART_FAILED: 'no_candidate',
}

/**
 * The replay side of one HTTP request (FLY-SPEC §6), created when its first response asks for a replay:
 * counts the chain, plans each target, keeps the timeout and the fallback, and writes the lines the
 * replayed request carries (`fly-replay-src`, or `fly-replay-failed` on a fallback). The session owns the
 * sockets and the routing; this object owns the decisions.
 */
export class ReplayExchange {
  /** A target is being routed or connected and no connection was made yet: a failure now is a replay failure. */
  pending = false
  /** The replay response came before the client finished sending its body: the replay waits for it. */
  awaitingBody = false
  target: ReplayTarget | undefined
  private count = 0
  private fellBack = false
  private directive: ReplayDirective | undefined
  private source: ReplaySource | undefined
  private startedAt = 0
  private timer: NodeJS.Timeout | undefined
  private failedLine: string | undefined
  private failedReason: ReplayFailure | undefined

  constructor(private readonly index: RoutingIndex) {}

  /** A response asked for a replay: where the request goes next, or the error the client gets. */
  next(held: HeldReplay, source: ReplaySource, kept: KeptBody): ReplayTarget | EdgeProxyError {
    const origin = replayOrigin(source)
    if (this.fellBack) {
      return new EdgeProxyError('EP_REPLAY_LOOP', `${origin}: the request already fell back to its source after a failed replay and cannot be replayed again; answer it when fly-replay-failed is present`)
    }
    if (++this.count > MAX_REPLAYS) {
      return new EdgeProxyError('EP_REPLAY_LOOP', `${origin}: more than ${MAX_REPLAYS} chained replays for one request; check the apps' fly-replay rules for a loop`)
    }
    const d = readDirective(source, held.header, held.json, held.body)
    if (d instanceof EdgeProxyError) return d
    if (kept.overflow) return this.tooLarge(source, kept)
    const target = planReplay(d, source, this.index)
    if (target instanceof EdgeProxyError) return target
    this.directive = d
    this.source = source
    this.target = target
    return target
  }

  /** The body grew past the replay buffer: the request cannot be sent again. */
  tooLarge(source: ReplaySource | undefined, kept: KeptBody): EdgeProxyError {
    const who = source ?? this.source
    const origin = who === undefined ? 'fly-replay' : replayOrigin(who)
    return new EdgeProxyError('EP_REPLAY_BODY_TOO_LARGE', `${origin}: the request body is larger than the ${formatBytes(kept.limit)} replay buffer, so it cannot be sent again; raise --replay-body-limit or let the Machine answer requests this large itself`)
  }

  /** The attempt starts (routing); a replay's `timeout` bounds it until a connection is made. */
  begin(onTimeout: () => void): void {
    this.pending = true
    this.awaitingBody = false
    if (this.fellBack) return // the way back to the source is not bounded by the replay's timeout
    this.startedAt = Date.now()
    const ms = this.directive?.timeout
    if (ms !== undefined) this.timer = setTimeout(onTimeout, ms)
  }

  /** A connection to a target was made: from here, whatever it answers is the answer (FLY-SPEC §6). */
  reached(): void {
    this.pending = false
    this.stopTimer()
  }

  timeoutError(): EdgeProxyError {
    const t = this.target!
    return new EdgeProxyError('EP_REPLAY_TIMEOUT', `${replayOrigin(this.source!)}: no Machine of app "${t.app}"${where(t)} took the request within timeout=${this.directive?.timeout} ms`)
  }

  /** The attempt found no target: the fallback target, or the error to answer with. */
  failed(err: EdgeProxyError): ReplayTarget | EdgeProxyError {
    this.reached()
    const reason = FAILURE_REASON[err.code]
    const source = this.source
    const target = this.target
    if (reason === undefined || source === undefined || target === undefined) return err
    const origin = replayOrigin(source)
    if (this.fellBack) {
      const how = this.directive?.fallback === 'force_self' ? `fallback=force_self: Machine ${source.machine.id} cannot take it any more` : `fallback=prefer_self: app "${source.machine.app}" has no Machine for it either`
      return new EdgeProxyError(err.code === 'EP_CAPACITY' ? 'EP_CAPACITY' : 'EP_NO_HEALTHY_MACHINE', `${origin}: the replay found no target (${this.failedReason}) and ${how} (${err.message})`)
    }
    const fallback = this.directive?.fallback
    if (fallback === undefined) return failureError(origin, target, reason, err)
    this.fellBack = true
    this.failedReason = reason
    this.failedLine = replayFailedLine({
      instance: target.instance, app: target.app, regions: target.regions, source: source.machine.id, reason, elapsedMs: Date.now() - this.startedAt,
    })
    const hints = fallback === 'force_self' ? { forceInstance: source.machine.id } : { preferInstance: source.machine.id }
    return { route: source.route, hints, app: source.route.service.app, regions: undefined, instance: source.machine.id }
  }

  /** The request as the target receives it: transformed by the JSON form's `transform`, not on a fallback. */
  request(req: RequestHead): RequestHead {
    const t = this.directive?.transform
    return this.fellBack || t === undefined ? req : transformRequest(req, t)
  }

  /** `base` is the upstream head (ending in CRLFCRLF): adds fly-replay-src, or fly-replay-failed on a fallback. */
  head(base: string): string {
    return `${base.slice(0, -2)}${this.line()}\r\n`
  }

  /** HTTP/2 clients: the same transform on path and header pairs, and the same line as a pair. */
  requestPairs(path: string, headers: Array<[string, string]>): { path: string; headers: Array<[string, string]> } {
    const t = this.directive?.transform
    const out = this.fellBack || t === undefined ? { path, headers } : transformPairs(path, headers, t)
    const line = this.line()
    const colon = line.indexOf(': ')
    out.headers.push([line.slice(0, colon), line.slice(colon + 2, -2)])
    return out
  }

  /** A target was picked: the timeout bounded the wait for one, not the request to it (FLY-SPEC §6). */
  stopTimer(): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private line(): string {
    return this.fellBack
      ? this.failedLine!
      : replaySrcLine(this.source!.machine.id, this.source!.machine.region, nowMicros(), this.directive?.state)
  }

  dispose(): void {
    this.pending = false
    clearTimeout(this.timer)
    this.timer = undefined
  }
}

function where(t: ReplayTarget): string {
  if (t.instance !== undefined) return ` (Machine ${t.instance})`
  if (t.regions !== undefined) return ` in ${t.regions.join(',')}`
  return ''
}

function failureError(origin: string, target: ReplayTarget, reason: ReplayFailure, err: EdgeProxyError): EdgeProxyError {
  const hint = 'add fallback=prefer_self to send it back to the app instead'
  switch (reason) {
    case 'no_candidate':
      if (err.code === 'EP_CAPACITY') return new EdgeProxyError('EP_CAPACITY', `${origin}: ${err.message}; ${hint}`)
      return new EdgeProxyError('EP_NO_HEALTHY_MACHINE', `${origin}: app "${target.app}" has no started, healthy Machine${where(target)}; ${hint}, or see \`edgeproxy catalog machines --app ${target.app}\``)
    case 'timeout':
      return err.code === 'EP_REPLAY_TIMEOUT' ? err : new EdgeProxyError(err.code, `${origin}: ${err.message}`)
    case 'retries_exhausted':
      return new EdgeProxyError(err.code, `${origin}: no Machine of app "${target.app}"${where(target)} could be reached (${err.message}); ${hint}`)
  }
}

function formatBytes(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)} MiB`
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`
  return `${n}-byte`
}
