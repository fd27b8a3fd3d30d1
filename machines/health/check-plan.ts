import type { AppConfig } from '../../schemas/app-config.js'
import { servicesOfGroup } from '../machine-env.js'
import type { HttpProbe, ProbeTarget } from './probe.js'

/**
 * Which checks a Machine gets, derived from its app config (FLY-SPEC §8). Service checks (`tcp_checks`,
 * `http_checks`, `http_service.checks`) are readiness checks named like Fly's (`servicecheck-00-http-8080`);
 * top-level `[checks.<name>]` are informational and keep their name. Every check targets the Machine's
 * private address, never its public hostname.
 */
export interface PlannedCheck {
  name: string
  /** Service checks gate routing; top-level checks are informational. */
  readiness: boolean
  graceMs: number
  intervalMs: number
  target: ProbeTarget
}

export interface HealthPlan {
  checks: PlannedCheck[]
  /**
   * Internal ports of services without checks: each must accept a connection once before the Machine is
   * ready. With no service at all nothing routes to the Machine, so it is ready once started.
   */
  readinessPorts: number[]
}

export interface PlanOptions {
  /**
   * X-Forwarded-Proto sent with HTTP checks unless the check sets it: `https` by default, so an app with
   * force_https answers its checks instead of redirecting them (FLY-SPEC §10). `false` sends none.
   */
  forwardedProto?: string | false
}

/** Keeps a misconfigured `interval = "0s"` from turning into a busy loop. */
const MIN_INTERVAL_MS = 100

export function planMachineChecks(config: AppConfig | undefined, processGroup: string, privateAddr: string, options: PlanOptions = {}): HealthPlan {
  const forwardedProto = options.forwardedProto ?? 'https'
  const services = servicesOfGroup(config, processGroup)
  const checks: PlannedCheck[] = []
  const index = (): string => String(checks.length).padStart(2, '0')
  for (const service of services) {
    const port = service.internal_port
    for (const c of service.tcp_checks) {
      checks.push({
        name: `servicecheck-${index()}-tcp-${port}`,
        readiness: true,
        graceMs: c.grace_period,
        intervalMs: Math.max(MIN_INTERVAL_MS, c.interval),
        target: { kind: 'tcp', host: privateAddr, port, timeoutMs: c.timeout },
      })
    }
    for (const c of service.http_checks) {
      checks.push({
        name: `servicecheck-${index()}-http-${port}`,
        readiness: true,
        graceMs: c.grace_period,
        intervalMs: Math.max(MIN_INTERVAL_MS, c.interval),
        target: httpTarget(privateAddr, port, c, forwardedProto),
      })
    }
  }
  for (const [name, c] of Object.entries(config?.checks ?? {})) {
    if (c.processes !== undefined && c.processes.length > 0 && !c.processes.includes(processGroup)) continue
    checks.push({
      name,
      readiness: false,
      graceMs: c.grace_period,
      intervalMs: Math.max(MIN_INTERVAL_MS, c.interval),
      target: c.type === 'tcp'
        ? { kind: 'tcp', host: privateAddr, port: c.port, timeoutMs: c.timeout }
        : httpTarget(privateAddr, c.port, c, forwardedProto),
    })
  }
  const unchecked = services.filter((s) => s.tcp_checks.length === 0 && s.http_checks.length === 0)
  const readinessPorts = [...new Set(unchecked.map((s) => s.internal_port))]
  return { checks, readinessPorts }
}

interface HttpCheckFields {
  timeout: number
  method?: string
  path?: string
  protocol?: 'http' | 'https'
  tls_skip_verify?: boolean
  tls_server_name?: string
  headers?: Record<string, string[]>
}

function httpTarget(host: string, port: number, c: HttpCheckFields, forwardedProto: string | false): HttpProbe {
  const headers: Record<string, string[]> = { ...(c.headers ?? {}) }
  const hasProto = Object.keys(headers).some((h) => h.toLowerCase() === 'x-forwarded-proto')
  if (forwardedProto !== false && !hasProto) headers['x-forwarded-proto'] = [forwardedProto]
  return {
    kind: 'http',
    host,
    port,
    timeoutMs: c.timeout,
    method: c.method ?? 'GET',
    path: c.path ?? '/',
    protocol: c.protocol ?? 'http',
    tlsSkipVerify: c.tls_skip_verify ?? false,
    tlsServerName: c.tls_server_name,
    headers,
  }
}
