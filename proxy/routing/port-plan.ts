import type { RoutingIndex } from './routing-index.js'
import type { PortRoute } from './service-route.js'

/**
 * What a public port does before it knows the app: terminate TLS (apps chosen by SNI), answer the
 * Postgres SSLRequest then TLS, or read plaintext. Plaintext HTTP ports are shared by Host; a plaintext
 * stream port (raw TCP, proxy_proto) belongs to one app (issue 6).
 */
export type PortFront = 'tls' | 'pg_tls' | 'plain'

export interface PortPlan {
  readonly publicPort: number
  readonly front: PortFront
  /** Some app on the port runs the http handler after the front. */
  readonly http: boolean
  /** Apps admitted on this port, first claimer first. */
  readonly apps: Map<string, PortRoute>
  /** Answers when SNI / Host names no admitted app (and owns plaintext stream ports). */
  readonly first: string
  /** Apps that asked for the port but cannot share it, with the reason. */
  readonly conflicts: Array<{ app: string; reason: string }>
  /** A Flycast listener (proxy/flycast/): it serves this one app whatever Host / SNI says. */
  readonly privateApp?: string
}

export function frontOf(route: PortRoute): PortFront {
  const h = route.port.handlers
  return h.includes('tls') ? 'tls' : h.includes('pg_tls') ? 'pg_tls' : 'plain'
}

export function isHttp(route: PortRoute): boolean {
  return route.port.handlers.includes('http')
}

/** Every public port of every deployed app, with who may share it. Older apps keep contested ports. */
export function planPorts(index: RoutingIndex): Map<number, PortPlan> {
  const apps = [...index.allApps()].filter((a) => a.record !== undefined)
  apps.sort((a, b) => (a.record!.createdAt - b.record!.createdAt) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  const plans = new Map<number, { publicPort: number; front: PortFront; http: boolean; apps: Map<string, PortRoute>; first: string; conflicts: Array<{ app: string; reason: string }> }>()
  for (const app of apps) {
    for (const route of app.ports.values()) {
      const front = frontOf(route)
      const http = isHttp(route)
      const plan = plans.get(route.publicPort)
      if (plan === undefined) {
        plans.set(route.publicPort, { publicPort: route.publicPort, front, http, apps: new Map([[app.name, route]]), first: app.name, conflicts: [] })
        continue
      }
      const reason = shareConflict(plan, front, http)
      if (reason === undefined) {
        plan.apps.set(app.name, route)
        if (http) plan.http = true
      } else {
        plan.conflicts.push({ app: app.name, reason })
      }
    }
  }
  return plans
}

function shareConflict(plan: { front: PortFront; http: boolean; first: string }, front: PortFront, http: boolean): string | undefined {
  if (plan.front !== front) return `port is used with "${plan.front}" by app "${plan.first}"`
  if (front === 'plain' && !(plan.http && http)) return `a plaintext TCP port belongs to one app ("${plan.first}")`
  return undefined
}
