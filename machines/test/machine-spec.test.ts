import { expect, test } from 'vitest'
import type { MachineRecord } from '../../schemas/catalog-records.js'
import { parseKillSignal, parsePort, MachineStopBodySchema } from '../../schemas/machine-requests.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import { AddressPool, parseMachineRange } from '../address-pool.js'
import { planMachineChecks } from '../health/check-plan.js'
import { resolveMachineCommand, splitCommandLine } from '../machine-command.js'
import { buildMachineEnv } from '../machine-env.js'

const machine = (over: Partial<MachineRecord['spec']> = {}): Pick<MachineRecord, 'id' | 'app' | 'region' | 'spec'> => ({
  id: '0123456789abcd', app: 'web', region: 'syd', spec: { cmd: [], env: {}, processGroup: 'app', ...over },
})

test('each Machine gets its own address from the range, keeps it when free, and the pool never leaves the range', () => {
  const pool = new AddressPool('127.66.0.0/30') // two usable addresses
  expect(pool.acquire('a')).toBe('127.66.0.1')
  expect(pool.acquire('b')).toBe('127.66.0.2')
  expect(pool.acquire('a')).toBe('127.66.0.1') // idempotent
  expect(() => pool.acquire('c')).toThrow(expect.objectContaining({ code: 'EP_MACHINE_ADDRESS_EXHAUSTED' }))
  pool.release('a')
  expect(pool.acquire('c', '127.66.0.1')).toBe('127.66.0.1')
  const other = new AddressPool('127.66.0.0/24')
  expect(other.acquire('x', '127.66.0.77')).toBe('127.66.0.77') // a restart keeps its privateAddr
  expect(other.acquire('y', '127.66.0.77')).toBe('127.66.0.1') // taken: the next free one
  expect(other.acquire('z', '10.0.0.5')).toBe('127.66.0.2') // outside the range: ignored
})

test('a Machine range must be loopback IPv4 CIDR', () => {
  expect(parseMachineRange('127.66.3.9/24')).toMatchObject({ cidr: '127.66.3.0/24', size: 256 })
  expect(() => parseMachineRange('10.0.0.0/16')).toThrow(/inside 127.0.0.0\/8/)
  expect(() => parseMachineRange('127.66.0.0')).toThrow(expect.objectContaining({ code: 'EP_INVALID_CONFIG', path: 'machineRange' }))
  expect(() => parseMachineRange('127.66.0.0/31')).toThrow(/prefix 8–30/)
})

test('env is [env], then the Machine env, then PORT and the FLY_ identity, which win', () => {
  const config = parseAppConfigText('app = "web"\nprimary_region = "ams"\n[env]\nLOG = "info"\nPORT = "1"\n[http_service]\ninternal_port = 3000\n').config
  const env = buildMachineEnv({
    machine: machine({ env: { LOG: 'debug', EXTRA: 'x' } }), config, privateAddr: '127.66.0.5',
    hostEnv: { PATH: '/bin', SECRET: 'no' }, inherit: ['PATH'],
  })
  expect(env).toEqual({
    PATH: '/bin', LOG: 'debug', EXTRA: 'x', PORT: '3000', PRIMARY_REGION: 'ams', FLY_APP_NAME: 'web', FLY_MACHINE_ID: '0123456789abcd',
    FLY_REGION: 'syd', FLY_PRIVATE_IP: '127.66.0.5', FLY_PROCESS_GROUP: 'app',
  })
  const bare = buildMachineEnv({ machine: machine(), config: parseAppConfigText('app = "w"').config, privateAddr: '127.66.0.6', hostEnv: {}, inherit: [] })
  expect(bare.PORT).toBe('8080')
  expect(bare.PRIMARY_REGION).toBeUndefined()
})

test('the command is the spec cmd, else the process group command, else [experimental] cmd; never a shell', () => {
  const config = parseAppConfigText('app = "web"\n[processes]\napp = "node server.js --name \'my app\'"\nworker = "node worker.js"\n[experimental]\ncmd = ["node", "fallback.js"]\n[[services]]\ninternal_port = 8080\nprocesses = ["app"]\n').config
  expect(resolveMachineCommand(machine({ cmd: ['./bin/run', '$HOME'] }), config)).toEqual(['./bin/run', '$HOME'])
  expect(resolveMachineCommand(machine(), config)).toEqual(['node', 'server.js', '--name', 'my app'])
  expect(resolveMachineCommand(machine({ processGroup: 'worker' }), config)).toEqual(['node', 'worker.js'])
  expect(resolveMachineCommand(machine({ processGroup: 'other' }), config)).toEqual(['node', 'fallback.js'])
  expect(() => resolveMachineCommand(machine(), undefined)).toThrow(expect.objectContaining({ code: 'EP_MACHINE_SPAWN_FAILED' }))
  expect(splitCommandLine(`a "b c" 'd "e"' f\\ g "h\\"i"`)).toEqual(['a', 'b c', 'd "e"', 'f g', 'h"i'])
  expect(() => splitCommandLine('a "b')).toThrow(/unterminated/)
})

test("checks target the Machine's private address and internal port; only service checks gate readiness", () => {
  const config = parseAppConfigText([
    'app = "web"',
    '[http_service]', 'internal_port = 3000',
    '[[http_service.checks]]', 'path = "/healthz"', 'interval = "5s"', 'timeout = "1s"', 'grace_period = "2s"',
    '[[services]]', 'internal_port = 5432', '[[services.tcp_checks]]', 'interval = "10s"',
    '[[services]]', 'internal_port = 9000',
    '[checks.metrics]', 'type = "http"', 'port = 9091', 'path = "/metrics"', '[checks.metrics.headers]', 'X-Forwarded-Proto = "http"',
  ].join('\n')).config
  const plan = planMachineChecks(config, 'app', '127.66.0.5')
  expect(plan.checks.map((c) => [c.name, c.readiness, c.target.host, c.target.port])).toEqual([
    ['servicecheck-00-http-3000', true, '127.66.0.5', 3000],
    ['servicecheck-01-tcp-5432', true, '127.66.0.5', 5432],
    ['metrics', false, '127.66.0.5', 9091],
  ])
  expect(plan.checks[0]).toMatchObject({ graceMs: 2000, intervalMs: 5000, target: { timeoutMs: 1000, path: '/healthz', headers: { 'x-forwarded-proto': ['https'] } } })
  expect(plan.checks[2].target).toMatchObject({ headers: { 'X-Forwarded-Proto': ['http'] } }) // the check's own value wins
  expect(plan.readinessPorts).toEqual([9000]) // the service without checks must accept once
  expect(planMachineChecks(config, 'app', '127.66.0.5', { forwardedProto: false }).checks[0].target).toMatchObject({ headers: {} })
})

test('API helpers reject a bad signal or port with a 400 naming the field', () => {
  expect(parseKillSignal('sigterm')).toBe('SIGTERM')
  expect(parseKillSignal('TERM')).toBe('SIGTERM')
  expect(() => parseKillSignal('SIGFOO')).toThrow(expect.objectContaining({ code: 'EP_INVALID_REQUEST', status: 400, path: 'signal' }))
  expect(parsePort('8080')).toBe(8080)
  expect(() => parsePort(70000, 'internal_port')).toThrow(expect.objectContaining({ status: 400, path: 'internal_port' }))
  expect(() => parsePort('80a')).toThrow(/not a port/)
  expect(MachineStopBodySchema.parse({ signal: 'sigterm', timeout: '10s' })).toEqual({ signal: 'SIGTERM', timeout: 10_000 })
  const bad = MachineStopBodySchema.safeParse({ signal: 'KILLALL' })
  expect(bad.success).toBe(false)
  expect(bad.error?.issues[0].path).toEqual(['signal'])
})
