import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { parseAppConfigText } from '../parse-app-config.js'
import { EdgeProxyError } from '../errors.js'
import { parseGoDuration } from '../duration.js'

const FIXTURES = join(import.meta.dirname, 'fixtures')
const read = (kind: string, name: string) => readFileSync(join(FIXTURES, kind, name), 'utf8')

describe('realistic fly.toml files are accepted', () => {
  const files = readdirSync(join(FIXTURES, 'good')).sort()
  test('there are at least 8 of them', () => expect(files.length).toBeGreaterThanOrEqual(8))
  test.each(files)('%s', (file) => {
    const { config } = parseAppConfigText(read('good', file), { file })
    expect(config.app).toMatch(/^[a-z0-9-]+$/)
    expect(config.services.length).toBeGreaterThanOrEqual(file.startsWith('01') || file.startsWith('09') ? 1 : 0)
  })
})

describe('broken fly.toml files are rejected with the field path and line', () => {
  const files = readdirSync(join(FIXTURES, 'bad')).sort()
  test('there are at least 8 of them', () => expect(files.length).toBeGreaterThanOrEqual(8))
  test.each(files)('%s', (file) => {
    const text = read('bad', file)
    const expected = /^# expect: (.+)$/m.exec(text)?.[1] as string
    let error: unknown
    try {
      parseAppConfigText(text, { file })
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(EdgeProxyError)
    expect((error as EdgeProxyError).code).toBe('EP_INVALID_CONFIG')
    // "<field path> (line N)": the message names the field, says what is wrong, then the line
    const [, where, line] = /^(.+?) \(line (\d+)\)$/.exec(expected) as RegExpExecArray
    const lineOfError = (error as EdgeProxyError).message.split('\n').find((l) => l.startsWith(`${file}: ${where}`))
    expect(lineOfError, (error as EdgeProxyError).message).toBeDefined()
    expect(lineOfError).toMatch(new RegExp(`: .+ \\(line ${line}\\)$`))
  })
})

describe('normalization matches Fly', () => {
  test('[http_service] becomes a service with port 80 (http) and 443 (tls, http)', () => {
    const { config } = parseAppConfigText(read('good', '01-launch-default.toml'))
    expect(config.services).toHaveLength(1)
    const [svc] = config.services
    expect(svc).toMatchObject({ internal_port: 8080, auto_stop_machines: 'stop', auto_start_machines: true, min_machines_running: 0, processes: ['app'] })
    expect(svc.ports.map((p) => [p.start_port, p.handlers, p.force_https])).toEqual([[80, ['http'], true], [443, ['tls', 'http'], false]])
    expect(svc.concurrency).toEqual({ type: 'connections', soft_limit: 20 })
  })

  test('handler lists are sets run in pipeline order, and string ports are numbers', () => {
    const { config } = parseAppConfigText(read('good', '02-multi-port.toml'))
    expect(config.services[0].ports[1].handlers).toEqual(['tls', 'http'])
    expect(config.services[1].ports[0]).toMatchObject({ start_port: 9000, end_port: 9010, handlers: [] })
    expect(config.kill_timeout).toBe(30_000)
    expect(config.kill_signal).toBe('SIGTERM')
    expect(config.env).toEqual({ LOG_LEVEL: 'info', WORKERS: '4', PRIMARY_REGION: 'iad' })
  })

  test('legacy forms: concurrency "soft,hard", auto_stop true, [experimental] kill_timeout, [[checks]] with names', () => {
    const { config, warnings } = parseAppConfigText(read('good', '06-legacy.toml'))
    expect(config.services[0].concurrency).toEqual({ type: 'requests', soft_limit: 20, hard_limit: 25 })
    expect(config.services[0].auto_stop_machines).toBe('stop')
    expect(config.services[0].ports[0].start_port).toBe(80)
    expect(config.kill_timeout).toBe(20_000)
    expect(Object.keys(config.checks)).toEqual(['alive'])
    expect(warnings).toEqual([])
  })

  test('durations: bare integers are ms in checks, Go strings anywhere', () => {
    const { config } = parseAppConfigText(read('good', '05-checks.toml'))
    expect(config.services[0].http_checks[0]).toMatchObject({ grace_period: 5000, interval: 10_000, timeout: 2000, method: 'GET', path: '/healthz', headers: { 'X-Health': ['1'] } })
    expect(config.checks.disk).toMatchObject({ type: 'http', port: 8080, interval: 30_000 })
    expect(parseGoDuration('1m30s')).toBe(90_000)
    expect(parseGoDuration('1.5s')).toBe(1500)
    expect(parseGoDuration('250ms')).toBe(250)
    expect(parseGoDuration('ten')).toBeUndefined()
  })

  test('unknown keys are warnings with their line, or errors with --strict; ignored sections warn', () => {
    const text = 'app = "x"\ncolour = "blue"\n[build]\nimage = "x"\n[http_service]\ninternal_port = 80\nmystery = 1\n'
    const { config, warnings } = parseAppConfigText(text, { file: 'fly.toml' })
    expect(config.app).toBe('x')
    expect(warnings).toEqual([
      'fly.toml: build: accepted but not used by edgeproxy (line 3)',
      'fly.toml: http_service.mystery: unknown key (line 7)',
      'fly.toml: colour: unknown key (line 2)',
    ])
    expect(() => parseAppConfigText(text, { file: 'fly.toml', strict: true })).toThrow(/colour: unknown key \(line 2\)/)
  })

  test('JSON is accepted as the equivalent of TOML', () => {
    const { config } = parseAppConfigText(JSON.stringify({ app: 'j', http_service: { internal_port: 3000 } }), { file: 'fly.json' })
    expect(config.services[0].internal_port).toBe(3000)
  })

  test('every error of a file is reported at once', () => {
    const text = 'app = "x"\nkill_signal = "NOPE"\n[[services]]\ninternal_port = 0\n'
    expect(() => parseAppConfigText(text)).toThrow(/kill_signal.*\(line 2\)\n.*services\[0\]\.internal_port.*\(line 4\)/s)
  })
})
