import { z } from 'zod'
import { durationMs } from './duration.js'

/**
 * fly.toml as edgeproxy reads it (shared/FLY-SPEC.md §2). Keys keep the names users write; the parsed
 * value is normalized: `[http_service]` becomes an ordinary service, legacy forms are rewritten, handler
 * lists are put in pipeline order and every duration is in milliseconds.
 */

export const APP_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
export const REGION_CODE = /^[a-z]{3}$/

export const AppNameSchema = z.string().regex(APP_NAME, 'must be 1–63 lowercase letters, digits or dashes, not starting or ending with a dash')
export const RegionSchema = z.string().regex(REGION_CODE, 'must be a three-letter region code such as "ams"')

export const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGKILL', 'SIGSTOP', 'SIGHUP'] as const
export const SignalSchema = z.enum(SIGNALS)
export type KillSignal = z.infer<typeof SignalSchema>

/** Pipeline order of handlers: a handler list is a set (flyctl writes `["http","tls"]`). */
export const HANDLER_ORDER = ['tls', 'pg_tls', 'proxy_proto', 'http'] as const
export const HandlerSchema = z.enum(HANDLER_ORDER)
export type Handler = z.infer<typeof HandlerSchema>

const PortNumber = z.coerce.number().int().min(1).max(65535)
/** The widest port range one service may claim; each port gets its own listener. */
export const MAX_PORT_RANGE = 1024

const CHECK_DURATION = durationMs(1)

const CheckHeaders = z
  .record(z.string(), z.union([z.string(), z.array(z.string())]))
  .transform((h) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Array.isArray(v) ? v : [v]])))

const TcpCheckSchema = z.strictObject({
  grace_period: CHECK_DURATION.default(1000),
  interval: CHECK_DURATION.default(15_000),
  timeout: CHECK_DURATION.default(2000),
  restart_limit: z.number().int().optional(),
})

const HttpCheckFields = {
  ...TcpCheckSchema.shape,
  method: z.string().transform((m) => m.toUpperCase()).default('GET'),
  path: z.string().startsWith('/', 'must start with "/"').default('/'),
  protocol: z.enum(['http', 'https']).default('http'),
  tls_skip_verify: z.boolean().default(false),
  tls_server_name: z.string().optional(),
  headers: CheckHeaders.default({}),
}
const HttpCheckSchema = z.strictObject(HttpCheckFields)

export type TcpCheck = z.infer<typeof TcpCheckSchema>
export type HttpCheck = z.infer<typeof HttpCheckSchema>

const TopLevelCheckSchema = z
  .strictObject({
    ...HttpCheckFields,
    name: z.string().optional(),
    type: z.enum(['tcp', 'http']),
    port: PortNumber,
    interval: CHECK_DURATION.default(15_000).refine((ms) => ms >= 2000, 'must be at least 2s for top-level checks'),
    timeout: CHECK_DURATION.default(2000).refine((ms) => ms <= 60_000, 'must be at most 60s'),
    processes: z.array(z.string()).optional(),
  })
export type TopLevelCheck = z.infer<typeof TopLevelCheckSchema>

const ConcurrencyObject = z.strictObject({
  type: z.enum(['connections', 'requests']).default('connections'),
  soft_limit: z.number().int().positive().default(20),
  hard_limit: z.number().int().positive().optional(),
})

/** Legacy `concurrency = "20,25"` means `{type="requests", soft_limit=20, hard_limit=25}`. */
const ConcurrencySchema = z.preprocess((value) => {
  if (typeof value !== 'string') return value
  const m = /^\s*(\d+)\s*,\s*(\d+)\s*$/.exec(value)
  return m === null ? value : { type: 'requests', soft_limit: Number(m[1]), hard_limit: Number(m[2]) }
}, ConcurrencyObject)
export type Concurrency = z.infer<typeof ConcurrencyObject>
const DEFAULT_CONCURRENCY: Concurrency = { type: 'connections', soft_limit: 20 }

const ResponseHeaderValue = z.union([z.literal(false), z.string(), z.array(z.string())])

const ReplayCacheSchema = z.strictObject({
  path_prefix: z.string(),
  ttl_seconds: z.number().int().min(10),
  type: z.enum(['cookie', 'header']),
  name: z.string().min(1),
  allow_bypass: z.boolean().default(false),
})

const HttpOptionsSchema = z.strictObject({
  h2_backend: z.boolean().default(false),
  idle_timeout: z.number().int().nonnegative().optional(),
  headers_read_timeout: z.number().int().nonnegative().optional(),
  compress: z.boolean().default(false),
  response: z
    .strictObject({
      pristine: z.boolean().default(false),
      headers: z.record(z.string(), ResponseHeaderValue).default({}),
    })
    .default({ pristine: false, headers: {} }),
  replay_cache: z.array(ReplayCacheSchema).default([]),
})
export type HttpOptions = z.infer<typeof HttpOptionsSchema>

const TlsOptionsSchema = z.strictObject({
  alpn: z.array(z.string()).optional(),
  versions: z.array(z.enum(['TLSv1.2', 'TLSv1.3'])).min(1).optional(),
  default_self_signed: z.boolean().default(false),
})
export type TlsOptions = z.infer<typeof TlsOptionsSchema>

const ProxyProtoOptionsSchema = z.strictObject({ version: z.enum(['v1', 'v2']).default('v1') })

const PortSchema = z
  .strictObject({
    port: PortNumber.optional(),
    start_port: PortNumber.optional(),
    end_port: PortNumber.optional(),
    handlers: z.array(HandlerSchema).default([]),
    force_https: z.boolean().default(false),
    http_options: HttpOptionsSchema.optional(),
    tls_options: TlsOptionsSchema.optional(),
    proxy_proto_options: ProxyProtoOptionsSchema.optional(),
  })
  .superRefine((p, ctx) => {
    const handlers = new Set(p.handlers)
    if (p.port !== undefined && (p.start_port !== undefined || p.end_port !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['port'], message: 'give either port or start_port/end_port, not both' })
    }
    if (p.port === undefined && p.start_port === undefined && p.end_port === undefined) {
      ctx.addIssue({ code: 'custom', path: ['port'], message: 'required (or start_port and end_port)' })
    }
    if (p.port === undefined && (p.start_port !== undefined || p.end_port !== undefined)) {
      const start = p.start_port ?? 1
      const end = p.end_port ?? 65535
      if (start > end) ctx.addIssue({ code: 'custom', path: ['start_port'], message: 'must be ≤ end_port' })
      else if (end - start + 1 > MAX_PORT_RANGE) {
        ctx.addIssue({ code: 'custom', path: ['end_port'], message: `a port range may span at most ${MAX_PORT_RANGE} ports` })
      }
    }
    if (p.force_https && !handlers.has('http')) {
      ctx.addIssue({ code: 'custom', path: ['force_https'], message: 'needs the "http" handler on the same port' })
    }
    if (handlers.has('tls') && handlers.has('pg_tls')) {
      ctx.addIssue({ code: 'custom', path: ['handlers'], message: '"tls" and "pg_tls" both terminate TLS; use one' })
    }
    if (handlers.has('http') && handlers.has('proxy_proto')) {
      ctx.addIssue({ code: 'custom', path: ['handlers'], message: '"proxy_proto" is for raw TCP streams and cannot follow "http"' })
    }
    if (handlers.has('pg_tls') && handlers.has('http')) {
      ctx.addIssue({ code: 'custom', path: ['handlers'], message: '"pg_tls" carries the Postgres protocol and cannot be combined with "http"' })
    }
  })
  .transform((p) => {
    const handlers = HANDLER_ORDER.filter((h) => p.handlers.includes(h))
    const hasHttp = handlers.includes('http')
    return {
      start_port: p.port ?? p.start_port ?? 1,
      end_port: p.port ?? p.end_port ?? 65535,
      handlers,
      force_https: p.force_https,
      http_options: hasHttp ? (p.http_options ?? HttpOptionsSchema.parse({})) : undefined,
      tls_options: handlers.includes('tls') || handlers.includes('pg_tls') ? (p.tls_options ?? TlsOptionsSchema.parse({})) : undefined,
      proxy_proto_options: handlers.includes('proxy_proto') ? (p.proxy_proto_options ?? { version: 'v1' as const }) : undefined,
    }
  })

/** Legacy `auto_stop_machines = true|false` means "stop" / "off". */
const AutoStopSchema = z
  .union([z.boolean(), z.enum(['off', 'stop', 'suspend'])])
  .transform((v) => (v === true ? 'stop' : v === false ? 'off' : v))
export type AutoStop = 'off' | 'stop' | 'suspend'

const ScalingFields = {
  auto_stop_machines: AutoStopSchema.default('off'),
  auto_start_machines: z.boolean().default(true),
  min_machines_running: z.number().int().nonnegative().default(0),
  processes: z.array(z.string()).optional(),
}

const ServiceSchema = z.strictObject({
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
  internal_port: PortNumber.default(8080),
  ...ScalingFields,
  ports: z.array(PortSchema).default([]),
  concurrency: ConcurrencySchema.default(DEFAULT_CONCURRENCY),
  tcp_checks: z.array(TcpCheckSchema).default([]),
  http_checks: z.array(HttpCheckSchema).default([]),
  machine_checks: z.array(z.unknown()).optional(),
  script_checks: z.array(z.unknown()).optional(),
})

const HttpServiceSchema = z.strictObject({
  internal_port: PortNumber.default(8080),
  force_https: z.boolean().default(false),
  ...ScalingFields,
  concurrency: ConcurrencySchema.default(DEFAULT_CONCURRENCY),
  tls_options: TlsOptionsSchema.optional(),
  http_options: HttpOptionsSchema.optional(),
  checks: z.array(HttpCheckSchema).default([]),
  machine_checks: z.array(z.unknown()).optional(),
})

const EnvSchema = z
  .record(z.string(), z.union([z.string(), z.number(), z.boolean()]))
  .superRefine((env, ctx) => {
    for (const key of Object.keys(env)) {
      if (key.startsWith('FLY_')) ctx.addIssue({ code: 'custom', path: [key], message: 'keys starting with FLY_ are reserved' })
    }
  })
  .transform((env) => Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])))

/** Sections edgeproxy accepts for compatibility but does not act on. */
export const IGNORED_SECTIONS = [
  'build', 'deploy', 'vm', 'compute', 'computes', 'mounts', 'mount', 'restart', 'metrics', 'statics', 'files',
  'machine_checks', 'swap_size_mb', 'console_command', 'host_dedication_id', 'machine_config', 'container',
] as const

const ExperimentalSchema = z.looseObject({
  kill_timeout: durationMs(1000).optional(),
  cmd: z.array(z.string()).optional(),
  entrypoint: z.array(z.string()).optional(),
  exec: z.array(z.string()).optional(),
})

export const RawAppConfigSchema = z.strictObject({
  app: AppNameSchema,
  primary_region: RegionSchema.optional(),
  kill_signal: SignalSchema.default('SIGINT'),
  kill_timeout: durationMs(1000).optional().refine((ms) => ms === undefined || ms <= 300_000, 'must be at most 300s'),
  env: EnvSchema.default({}),
  processes: z.record(z.string().regex(/^[a-z0-9_-]+$/, 'process names are lowercase letters, digits, "_" and "-"'), z.string()).optional(),
  http_service: HttpServiceSchema.optional(),
  services: z.array(ServiceSchema).default([]),
  checks: z
    .preprocess((value) => {
      // legacy `[[checks]]` with `name` keys
      if (!Array.isArray(value)) return value
      return Object.fromEntries(value.map((c: { name?: unknown }, i) => [typeof c?.name === 'string' ? c.name : `check_${i}`, c]))
    }, z.record(z.string(), TopLevelCheckSchema))
    .default({}),
  experimental: ExperimentalSchema.optional(),
  ...Object.fromEntries(IGNORED_SECTIONS.map((k) => [k, z.unknown().optional()])),
})

function expandHttpService(h: z.infer<typeof HttpServiceSchema>) {
  const httpOptions = h.http_options ?? HttpOptionsSchema.parse({})
  return {
    protocol: 'tcp' as const,
    internal_port: h.internal_port,
    auto_stop_machines: h.auto_stop_machines,
    auto_start_machines: h.auto_start_machines,
    min_machines_running: h.min_machines_running,
    processes: h.processes,
    concurrency: h.concurrency,
    tcp_checks: [],
    http_checks: h.checks,
    ports: [
      { start_port: 80, end_port: 80, handlers: ['http' as const], force_https: h.force_https, http_options: httpOptions, tls_options: undefined, proxy_proto_options: undefined },
      {
        start_port: 443,
        end_port: 443,
        handlers: ['tls' as const, 'http' as const],
        force_https: false,
        http_options: httpOptions,
        tls_options: h.tls_options ?? TlsOptionsSchema.parse({}),
        proxy_proto_options: undefined,
      },
    ],
  }
}

export const FlyTomlSchema = RawAppConfigSchema.superRefine((c, ctx) => {
  const groups = c.processes === undefined ? undefined : new Set(Object.keys(c.processes))
  const services = [...(c.http_service ? [{ where: ['http_service'], s: c.http_service }] : []), ...c.services.map((s, i) => ({ where: ['services', i], s }))]
  for (const { where, s } of services) {
    if (groups === undefined) continue
    if (s.processes === undefined || s.processes.length === 0) {
      ctx.addIssue({ code: 'custom', path: [...where, 'processes'], message: 'required when [processes] is defined' })
      continue
    }
    s.processes.forEach((p, j) => {
      if (!groups.has(p)) ctx.addIssue({ code: 'custom', path: [...where, 'processes', j], message: `unknown process group "${p}"` })
    })
  }
  c.services.forEach((s, i) => {
    if (s.protocol === 'udp' && s.ports.some((p) => p.handlers.length > 0)) {
      ctx.addIssue({ code: 'custom', path: ['services', i, 'ports'], message: 'udp services take no handlers' })
    }
  })
}).transform((c): AppConfig => {
  const services = [...(c.http_service ? [expandHttpService(c.http_service)] : []), ...c.services.map(({ machine_checks: _m, script_checks: _s, ...s }) => s)]
  const env = { ...c.env }
  if (c.primary_region !== undefined) env.PRIMARY_REGION = c.primary_region
  return {
    app: c.app,
    primary_region: c.primary_region,
    kill_signal: c.kill_signal,
    kill_timeout: c.kill_timeout ?? c.experimental?.kill_timeout ?? 5000,
    env,
    processes: c.processes ?? {},
    services: services.map((s) => ({ ...s, processes: s.processes ?? (c.processes ? [] : ['app']) })),
    checks: c.checks,
    cmd: c.experimental?.cmd,
  }
})

/**
 * The normalized config as stored in the catalog and carried by events. Disk and peers are not trusted, so
 * it is validated again on the way in; FlyTomlSchema's transform must produce exactly this shape.
 */
const NormalizedCheck = z.strictObject({
  grace_period: z.number().nonnegative(),
  interval: z.number().positive(),
  timeout: z.number().positive(),
  restart_limit: z.number().int().optional(),
})
const NormalizedHttpCheck = NormalizedCheck.extend({
  method: z.string(),
  path: z.string(),
  protocol: z.enum(['http', 'https']),
  tls_skip_verify: z.boolean(),
  tls_server_name: z.string().optional(),
  headers: z.record(z.string(), z.array(z.string())),
})
const NormalizedTopLevelCheck = NormalizedHttpCheck.partial({ method: true, path: true, protocol: true, tls_skip_verify: true, headers: true }).extend({
  name: z.string().optional(),
  type: z.enum(['tcp', 'http']),
  port: z.number().int().min(1).max(65535),
  processes: z.array(z.string()).optional(),
})
const NormalizedHttpOptions = z.strictObject({
  h2_backend: z.boolean(),
  idle_timeout: z.number().int().nonnegative().optional(),
  headers_read_timeout: z.number().int().nonnegative().optional(),
  compress: z.boolean(),
  response: z.strictObject({ pristine: z.boolean(), headers: z.record(z.string(), ResponseHeaderValue) }),
  replay_cache: z.array(ReplayCacheSchema),
})
const NormalizedPort = z.strictObject({
  start_port: z.number().int().min(1).max(65535),
  end_port: z.number().int().min(1).max(65535),
  handlers: z.array(HandlerSchema),
  force_https: z.boolean(),
  http_options: NormalizedHttpOptions.optional(),
  tls_options: z.strictObject({ alpn: z.array(z.string()).optional(), versions: z.array(z.enum(['TLSv1.2', 'TLSv1.3'])).optional(), default_self_signed: z.boolean() }).optional(),
  proxy_proto_options: z.strictObject({ version: z.enum(['v1', 'v2']) }).optional(),
})
const NormalizedService = z.strictObject({
  protocol: z.enum(['tcp', 'udp']),
  internal_port: z.number().int().min(1).max(65535),
  auto_stop_machines: z.enum(['off', 'stop', 'suspend']),
  auto_start_machines: z.boolean(),
  min_machines_running: z.number().int().nonnegative(),
  processes: z.array(z.string()),
  ports: z.array(NormalizedPort),
  concurrency: z.strictObject({ type: z.enum(['connections', 'requests']), soft_limit: z.number().int().positive(), hard_limit: z.number().int().positive().optional() }),
  tcp_checks: z.array(NormalizedCheck),
  http_checks: z.array(NormalizedHttpCheck),
})
export const AppConfigSchema = z.strictObject({
  app: AppNameSchema,
  primary_region: RegionSchema.optional(),
  kill_signal: SignalSchema,
  kill_timeout: z.number().int().nonnegative(),
  env: z.record(z.string(), z.string()),
  processes: z.record(z.string(), z.string()),
  services: z.array(NormalizedService),
  checks: z.record(z.string(), NormalizedTopLevelCheck),
  cmd: z.array(z.string()).optional(),
})

export type AppConfig = z.output<typeof AppConfigSchema>
export type Service = AppConfig['services'][number]
export type ServicePortConfig = Service['ports'][number]
