import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { afterEach, expect, test } from 'vitest'
import { isRunning, isStopped, processGroupMembers, readProcStat } from '../process-info.js'
import { readMachineLogs } from '../logs/read-logs.js'
import { harness, type Harness, isReady, waitMachine, waitRemoved } from './harness.js'

let h: Harness | undefined
afterEach(async () => { await h?.teardown(); h = undefined })

async function getJson(url: string): Promise<{ env: Record<string, string>; headers: Record<string, string>; pid: number }> {
  const res = await request(url, { headersTimeout: 5000, bodyTimeout: 5000 })
  expect(res.statusCode).toBe(200)
  return (await res.body.json()) as { env: Record<string, string>; headers: Record<string, string>; pid: number }
}

async function logText(dataDir: string, id: string): Promise<string> {
  const lines: string[] = []
  for await (const line of readMachineLogs(dataDir, id)) lines.push(line)
  return lines.join('\n')
}

test('a started Machine runs on its own loopback address with its identity in env, and stops on request', async () => {
  h = await harness()
  await h.deploy('web', `[env]\nGREETING = "hello"\n[http_service]\ninternal_port = ${h.port}\n`)
  const m = await h.run('web', { OWN: 'yes' })

  const ready = await waitMachine(h.catalog, m.id, isReady, 'started and ready')
  const addr = ready.privateAddr as string
  expect(addr.startsWith(h.range.slice(0, h.range.lastIndexOf('.')))).toBe(true)
  const body = await getJson(`http://${addr}:${h.port}/`)
  expect(body.env).toMatchObject({
    GREETING: 'hello', OWN: 'yes', PORT: String(h.port), FLY_APP_NAME: 'web', FLY_MACHINE_ID: m.id, FLY_REGION: 'ams',
    FLY_PRIVATE_IP: addr, PRIMARY_REGION: 'ams',
  })
  const pid = h.pidOf(m.id) as number
  expect(body.pid).toBe(pid)

  await h.catalog.setDesiredState(m.id, 'stopped', 'test: stop')
  const stopped = await waitMachine(h.catalog, m.id, (x) => x.state === 'stopped', 'stopped')
  expect(stopped).toMatchObject({ stateReason: 'test: stop', ready: false })
  expect(isRunning(readProcStat(pid))).toBe(false)
  expect(h.supervisor.processes()).toEqual([])
  const log = await logText(h.dir, m.id)
  expect(log).toContain('app: got SIGINT, exiting') // default kill_signal, handled by the app
  expect(log).toContain('[edgeproxy] exited with code 0')
})

test('two Machines of one app listen on the same internal port, each on its own address', async () => {
  h = await harness()
  await h.deploy('web')
  const [a, b] = [await h.run('web'), await h.run('web')]
  const [ra, rb] = await Promise.all([waitMachine(h.catalog, a.id, isReady, 'ready'), waitMachine(h.catalog, b.id, isReady, 'ready')])
  expect(ra.privateAddr).not.toBe(rb.privateAddr)
  const [ba, bb] = await Promise.all([getJson(`http://${ra.privateAddr}:${h.port}/`), getJson(`http://${rb.privateAddr}:${h.port}/`)])
  expect(ba.env.FLY_MACHINE_ID).toBe(a.id)
  expect(bb.env.FLY_MACHINE_ID).toBe(b.id)
})

test('an app that ignores SIGINT is SIGKILLed after kill_timeout', async () => {
  h = await harness()
  await h.deploy('stubborn', `kill_timeout = "1s"\n[http_service]\ninternal_port = ${h.port}\n`)
  const m = await h.run('stubborn', { IGNORE_SIGNALS: '1' })
  await waitMachine(h.catalog, m.id, isReady, 'ready')
  const pid = h.pidOf(m.id) as number

  const began = Date.now()
  await h.catalog.setDesiredState(m.id, 'stopped', 'test: stop')
  await waitMachine(h.catalog, m.id, (x) => x.state === 'stopping', 'stopping')
  expect(isRunning(readProcStat(pid))).toBe(true) // still there: SIGINT was ignored
  await waitMachine(h.catalog, m.id, (x) => x.state === 'stopped', 'stopped')

  expect(Date.now() - began).toBeGreaterThanOrEqual(1000)
  expect(isRunning(readProcStat(pid))).toBe(false)
  const log = await logText(h.dir, m.id)
  expect(log).toContain('app: ignoring SIGINT')
  expect(log).toContain('sending SIGKILL')
  expect(log).toContain('[edgeproxy] was killed by SIGKILL (forced)')
})

test('stopping a Machine kills its whole process group, grandchildren included', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web', { GRANDCHILD: '1' })
  await waitMachine(h.catalog, m.id, isReady, 'ready')
  const pid = h.pidOf(m.id) as number
  const members = processGroupMembers(pid)
  expect(members.length).toBe(2) // the app and its child
  for (const p of members) h.seenPids.add(p)

  await h.catalog.setDesiredState(m.id, 'stopped', 'test: stop')
  await waitMachine(h.catalog, m.id, (x) => x.state === 'stopped', 'stopped')
  expect(processGroupMembers(pid)).toEqual([])
})

test('suspend stops the process in memory (SIGSTOP) and a start resumes the same process', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web')
  await waitMachine(h.catalog, m.id, isReady, 'ready')
  const pid = h.pidOf(m.id) as number

  await h.catalog.setDesiredState(m.id, 'suspended', 'autostop: idle')
  const suspended = await waitMachine(h.catalog, m.id, (x) => x.state === 'suspended', 'suspended')
  expect(suspended).toMatchObject({ ready: false, stateReason: 'autostop: idle' })
  expect(isStopped(readProcStat(pid))).toBe(true)

  await h.catalog.setDesiredState(m.id, 'started', 'autostart: request r1')
  const resumed = await waitMachine(h.catalog, m.id, isReady, 'resumed and ready')
  expect(resumed.stateReason).toBe('autostart: request r1')
  expect(h.pidOf(m.id)).toBe(pid)
  expect(isStopped(readProcStat(pid))).toBe(false)
  expect((await getJson(`http://${resumed.privateAddr}:${h.port}/`)).pid).toBe(pid)
})

test('a suspended Machine can be stopped: it gets its kill_signal once continued', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web')
  await waitMachine(h.catalog, m.id, isReady, 'ready')
  const pid = h.pidOf(m.id) as number
  await h.catalog.setDesiredState(m.id, 'suspended', 'test: suspend')
  await waitMachine(h.catalog, m.id, (x) => x.state === 'suspended', 'suspended')

  await h.catalog.setDesiredState(m.id, 'stopped', 'test: stop')
  await waitMachine(h.catalog, m.id, (x) => x.state === 'stopped', 'stopped')
  expect(isRunning(readProcStat(pid))).toBe(false)
  expect(await logText(h.dir, m.id)).toContain('app: got SIGINT, exiting')
})

test('destroy stops the process, removes its folder, and drops the Machine from the catalog', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web')
  await waitMachine(h.catalog, m.id, isReady, 'ready')
  const pid = h.pidOf(m.id) as number
  const states: string[] = []
  const sub = h.catalog.subscribe({}, (e) => { if (e.type === 'machine.state' && e.machineId === m.id) states.push(e.state) })

  await h.catalog.setDesiredState(m.id, 'destroyed', 'test: destroy')
  await waitRemoved(h.catalog, m.id)
  sub.close()

  expect(h.catalog.getMachine(m.id)).toBeUndefined()
  expect(states).toEqual(['destroying', 'destroyed'])
  expect(isRunning(readProcStat(pid))).toBe(false)
  expect(existsSync(join(h.dir, 'machines', m.id))).toBe(false)
})

test('a stop of the supervisor stops every Machine in parallel and reports them stopped', async () => {
  h = await harness()
  await h.deploy('stubborn', `kill_timeout = "1s"\n[http_service]\ninternal_port = ${h.port}\n`)
  const ms = [await h.run('stubborn', { IGNORE_SIGNALS: '1' }), await h.run('stubborn', { IGNORE_SIGNALS: '1' }), await h.run('stubborn', { IGNORE_SIGNALS: '1' })]
  await Promise.all(ms.map((m) => waitMachine(h!.catalog, m.id, isReady, 'ready')))
  const pids = ms.map((m) => h!.pidOf(m.id) as number)

  const began = Date.now()
  await h.supervisor.stop()
  const took = Date.now() - began

  // each needs its full 1 s kill_timeout; one after the other would take 3 s
  expect(took).toBeGreaterThanOrEqual(1000)
  expect(took).toBeLessThan(2500)
  for (const pid of pids) expect(isRunning(readProcStat(pid))).toBe(false)
  for (const m of ms) expect(h.catalog.getMachine(m.id)).toMatchObject({ state: 'stopped', stateReason: 'node shutting down', ready: false, desired: 'started' })
})
