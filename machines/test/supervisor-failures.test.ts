import { afterEach, expect, test } from 'vitest'
import { isRunning, readProcStat } from '../process-info.js'
import { harness, type Harness, isReady, waitMachine } from './harness.js'

let h: Harness | undefined
afterEach(async () => { await h?.teardown(); h = undefined })

test('a command that does not exist fails the Machine with EP_MACHINE_SPAWN_FAILED', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web', {}, ['edgeproxy-no-such-command-xyz', '--serve'])
  const failed = await waitMachine(h.catalog, m.id, (x) => x.state === 'failed', 'failed')
  expect(failed.stateReason).toMatch(/^EP_MACHINE_SPAWN_FAILED: command not found: "edgeproxy-no-such-command-xyz"/)
  expect(failed.ready).toBe(false)
  expect(h.supervisor.processes()).toEqual([])
})

test('a process that exits at once fails the Machine with EP_MACHINE_SPAWN_FAILED and its last output', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web', {}, [process.execPath, '-e', 'console.error("Error: DATABASE_URL is not set"); process.exit(2)'])
  const failed = await waitMachine(h.catalog, m.id, (x) => x.state === 'failed', 'failed')
  expect(failed.stateReason).toContain('EP_MACHINE_SPAWN_FAILED: ')
  expect(failed.stateReason).toContain('exited with code 2')
  expect(failed.stateReason).toContain('last output: Error: DATABASE_URL is not set')
  expect(failed.stateReason).toContain(`edgeproxy machines logs ${m.id}`)
})

test('a crashing app is restarted with growing delays, then fails with EP_MACHINE_CRASH_LOOP', async () => {
  h = await harness({ spawnGraceMs: 200, crashPolicy: { maxCrashes: 3, windowMs: 60_000, baseDelayMs: 100, maxDelayMs: 5000 } })
  await h.deploy('web')
  const reasons: string[] = []
  const pids = new Set<number>()
  const sub = h.catalog.subscribe({}, (e) => {
    if (e.type !== 'machine.state') return
    reasons.push(`${e.state}: ${e.reason}`)
    for (const p of h!.supervisor.processes()) pids.add(p.pid)
  })
  const m = await h.run('web', { CRASH_AFTER_MS: '400' })

  const failed = await waitMachine(h.catalog, m.id, (x) => x.state === 'failed', 'failed', 15_000)
  sub.close()
  expect(failed.stateReason).toMatch(/^EP_MACHINE_CRASH_LOOP: crashed 3 times within 60s \(last: exited with code 3\)/)
  expect(failed.stateReason).toContain('app: crashing on purpose')
  const crashes = reasons.filter((r) => r.startsWith('stopped: crashed'))
  expect(crashes).toEqual([
    'stopped: crashed (exited with code 3); restarting in 0.1s (crash 1 of 3 allowed within 60s)',
    'stopped: crashed (exited with code 3); restarting in 0.2s (crash 2 of 3 allowed within 60s)',
  ])
  expect(reasons.filter((r) => r === 'starting: restarted after a crash (exited with code 3)')).toHaveLength(2)
  expect(pids.size).toBe(3) // three processes, none left
  for (const pid of pids) expect(isRunning(readProcStat(pid))).toBe(false)
})

test('a failed Machine stays failed until a new start request, which retries it', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web', {}, ['edgeproxy-no-such-command-xyz'])
  await waitMachine(h.catalog, m.id, (x) => x.state === 'failed', 'failed')

  // a new request to run (same desired state, new reason) is a retry; it fails again the same way
  const states: string[] = []
  const sub = h.catalog.subscribe({}, (e) => { if (e.type === 'machine.state') states.push(e.state) })
  await h.catalog.setDesiredState(m.id, 'started', 'api: start (retry 1)')
  const again = await waitMachine(h.catalog, m.id, (x) => x.state === 'failed' && states.length >= 2, 'failed again')
  sub.close()
  expect(states).toEqual(['starting', 'failed'])
  expect(again.stateReason).toContain('EP_MACHINE_SPAWN_FAILED')

  await h.catalog.setDesiredState(m.id, 'stopped', 'api: stop')
  const stopped = await waitMachine(h.catalog, m.id, (x) => x.state === 'stopped', 'stopped')
  expect(stopped.stateReason).toBe('api: stop')
})

test('a Machine that crashes after running a while is restarted and becomes ready again', async () => {
  h = await harness()
  await h.deploy('web')
  const m = await h.run('web')
  const first = await waitMachine(h.catalog, m.id, isReady, 'ready')
  const pid = h.pidOf(m.id) as number
  process.kill(pid, 'SIGKILL') // an out-of-memory kill, say

  await waitMachine(h.catalog, m.id, (x) => x.state === 'stopped' && x.stateReason.startsWith('crashed (was killed by SIGKILL)'), 'crashed')
  const back = await waitMachine(h.catalog, m.id, isReady, 'ready again')
  expect(h.pidOf(m.id)).not.toBe(pid)
  expect(back.privateAddr).toBe(first.privateAddr) // a Machine keeps its address across restarts
})
