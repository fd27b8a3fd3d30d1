import { EdgeProxyError } from '../../schemas/errors.js'
import type { RoutingHints } from '../routing/balancer.js'
import { isHttp } from '../routing/port-plan.js'
import type { RoutableMachine } from '../routing/routable-machine.js'
import type { AppRoute, RoutingIndex } from '../routing/routing-index.js'
import type { PortRoute } from '../routing/service-route.js'
import { MAX_DIRECTIVE_BYTES, type ReplayDirective, toDirective } from './replay-directive.js'
import { splitReplayHeader } from './replay-header.js'

/** The Machine whose response asked for a replay, and the route the request had reached it by. */
export interface ReplaySource {
  readonly machine: RoutableMachine
  readonly route: PortRoute
}

/** Where a replay goes: a service of an app, with the routing rules the fields asked for. */
export interface ReplayTarget {
  readonly route: PortRoute
  readonly hints: RoutingHints | undefined
  readonly app: string
  readonly regions: readonly string[] | undefined
  /** `instance` or `prefer_instance`, for messages and fly-replay-failed. */
  readonly instance: string | undefined
}

/** `fly-replay from Machine 0a1b… (app "web")`: every replay error starts by naming who asked. */
export function replayOrigin(source: ReplaySource): string {
  return `fly-replay from Machine ${source.machine.id} (app "${source.machine.app}")`
}

/**
 * The directive of a held response: its `application/vnd.fly.replay+json` body when it has that content
 * type, else its `fly-replay` header. `body` is undefined when the JSON body was over MAX_DIRECTIVE_BYTES.
 */
export function readDirective(source: ReplaySource, header: string | undefined, json: boolean, body: Buffer | undefined): ReplayDirective | EdgeProxyError {
  const origin = replayOrigin(source)
  let raw: unknown
  if (json) {
    if (body === undefined) return new EdgeProxyError('EP_REPLAY_INVALID', `${origin}: the replay JSON body is larger than ${MAX_DIRECTIVE_BYTES / 1024} KiB`)
    try {
      raw = JSON.parse(body.toString('utf8'))
    } catch (err) {
      return new EdgeProxyError('EP_REPLAY_INVALID', `${origin}: the application/vnd.fly.replay+json body is not JSON (${(err as Error).message})`)
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      return new EdgeProxyError('EP_REPLAY_INVALID', `${origin}: the application/vnd.fly.replay+json body must be a JSON object`)
    }
  } else {
    const fields = splitReplayHeader(header ?? '')
    if (typeof fields === 'string') return new EdgeProxyError('EP_REPLAY_INVALID', `${origin}: invalid fly-replay header (${fields}): "${header}"`)
    raw = fields
  }
  const d = toDirective(raw)
  if (typeof d === 'string') return new EdgeProxyError('EP_REPLAY_INVALID', `${origin}: invalid fly-replay ${json ? 'JSON' : 'header'}: ${d}`)
  if (!json && d.transform !== undefined) return new EdgeProxyError('EP_REPLAY_INVALID', `${origin}: "transform" exists only in the JSON form (content-type application/vnd.fly.replay+json)`)
  return d
}

/**
 * Where the directive sends the request (FLY-SPEC §6): `app` (default: the same app) on the same public
 * port when it serves http there, else its first http port; `region` is a forced list (`any` allows the
 * rest), `instance` forces and `prefer_instance` prefers a Machine, `elsewhere` leaves the responding
 * Machine out. Sync and lookup-only, like the route phase.
 */
export function planReplay(d: ReplayDirective, source: ReplaySource, index: RoutingIndex): ReplayTarget | EdgeProxyError {
  const origin = replayOrigin(source)
  const sameApp = d.app === undefined || d.app === source.route.service.app
  const appName = d.app ?? source.route.service.app
  let route = source.route
  if (!sameApp) {
    const app = index.app(appName)
    if (app?.record === undefined) {
      return new EdgeProxyError('EP_REPLAY_TARGET_NOT_FOUND', `${origin} names app "${appName}", which is not deployed; see \`edgeproxy apps ls\``)
    }
    const found = httpRouteOf(app, source.route.publicPort)
    if (found === undefined) {
      return new EdgeProxyError('EP_REPLAY_TARGET_NOT_FOUND', `${origin} names app "${appName}", which has no http service to replay to; give it [[services.ports]] with handlers = ["http"]`)
    }
    route = found
  }
  if (route.port.http_options?.h2_backend === true) {
    return new EdgeProxyError('EP_REPLAY_INVALID', `${origin}: app "${appName}" talks h2c to its Machines (h2_backend), which replay does not support yet`)
  }
  for (const [field, id] of [['instance', d.instance], ['prefer_instance', d.prefer_instance]] as const) {
    const owner = id === undefined ? undefined : index.machines.get(id)?.app
    if (owner !== undefined && owner !== appName) {
      return new EdgeProxyError('EP_REPLAY_INVALID', `${origin}: ${field} ${id} is a Machine of app "${owner}", not of "${appName}"; add app=${owner} or fix the id`)
    }
  }
  const hints: { -readonly [K in keyof RoutingHints]: RoutingHints[K] } = {}
  if (d.instance !== undefined) hints.forceInstance = d.instance
  if (d.prefer_instance !== undefined) hints.preferInstance = d.prefer_instance
  if (d.region !== undefined) hints.forceRegions = d.region
  if (d.elsewhere && sameApp) hints.exclude = new Set([source.machine.id])
  const any = hints.forceInstance !== undefined || hints.preferInstance !== undefined || hints.forceRegions !== undefined || hints.exclude !== undefined
  return { route, hints: any ? hints : undefined, app: appName, regions: d.region, instance: d.instance ?? d.prefer_instance }
}

/** The app's http route on `publicPort`, else its lowest http port (plaintext before TLS). */
function httpRouteOf(app: AppRoute, publicPort: number): PortRoute | undefined {
  const same = app.ports.get(publicPort)
  if (same !== undefined && isHttp(same)) return same
  let best: PortRoute | undefined
  for (const r of app.ports.values()) {
    if (!isHttp(r)) continue
    const plain = !r.port.handlers.includes('tls')
    const bestPlain = best !== undefined && !best.port.handlers.includes('tls')
    if (best === undefined || (plain && !bestPlain) || (plain === bestPlain && r.publicPort < best.publicPort)) best = r
  }
  return best
}
