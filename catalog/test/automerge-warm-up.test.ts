import { expect, test } from 'vitest'
import { warmUpAutomerge } from '../automerge-warm-up.js'

/** Turns of the event loop (setImmediate callbacks) that ran while `work` was pending. */
async function turnsDuring<T>(work: Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0
  let pending = true
  const spin = (): void => {
    if (!pending) return
    turns++
    setImmediate(spin)
  }
  setImmediate(spin)
  try {
    return { result: await work, turns }
  } finally {
    pending = false
  }
}

test('the warm-up runs all its rounds in small steps: the event loop turns between them', async () => {
  const { result, turns } = await turnsDuring(warmUpAutomerge({ rounds: 4, writesPerSide: 12 }))
  expect(result).toMatchObject({ rounds: 4, aborted: false })
  // building the pair (a step per five writes a side) and each round (load, every sync message, push) yield:
  // far more turns than rounds, so no request or heartbeat waits behind the whole warm-up
  expect(turns).toBeGreaterThan(4 * 5)
})

test('an abort stops the warm-up at its next step and says so', async () => {
  const stop = new AbortController()
  const running = warmUpAutomerge({ rounds: 50, signal: stop.signal })
  // a few turns in: some pieces have run, most rounds have not
  for (let k = 0; k < 8; k++) await new Promise<void>((r) => setImmediate(r))
  stop.abort()
  const r = await running
  expect(r.aborted).toBe(true)
  expect(r.rounds).toBeLessThan(50)

  const never = await warmUpAutomerge({ signal: AbortSignal.abort() })
  expect(never).toMatchObject({ rounds: 0, aborted: true })
})

test('warm-ups can run again and side by side: each frees only the documents it made', async () => {
  const runs = await Promise.all([warmUpAutomerge({ rounds: 2, writesPerSide: 9 }), warmUpAutomerge({ rounds: 2, writesPerSide: 9 })])
  expect(runs.map((r) => r.rounds)).toEqual([2, 2])
  expect((await warmUpAutomerge({ rounds: 1, writesPerSide: 6 })).rounds).toBe(1)
})
