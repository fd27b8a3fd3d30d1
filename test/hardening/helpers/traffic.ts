import { randomUUID } from 'node:crypto'
import { Agent, request } from 'undici'

/**
 * Steady client traffic for the hardening tests: `concurrency` loops, each sending one request after the
 * other (keep-alive) and recording what came back. Every request carries a unique `x-token`, so a test can
 * tell which ones a Machine saw and how often.
 */
export interface TrafficInit {
  /** http://127.0.0.1:PORT (the edge's bound port). */
  origin: string
  host: string
  concurrency: number
  path?: string | ((i: number) => string)
  method?: string
  body?: (i: number) => Buffer | undefined
  headersTimeoutMs?: number
  /** Pause between a loop's requests. */
  gapMs?: number
}

export interface Outcome {
  token: string
  /** performance.now() when the request was sent and when it ended. */
  startedAt: number
  endedAt: number
  status: number | undefined
  error: string | undefined
  /** The Machine's JSON answer, when it was one. */
  answer: { machine?: string; region?: string; token?: string; bytes?: number } | undefined
}

export interface Traffic {
  readonly outcomes: Outcome[]
  /** Stops starting new requests and waits for those in flight. */
  stop(): Promise<Outcome[]>
}

export function startTraffic(init: TrafficInit): Traffic {
  const agent = new Agent({ connections: init.concurrency, keepAliveTimeout: 30_000, pipelining: 1 })
  const outcomes: Outcome[] = []
  let running = true
  let n = 0
  const loop = async (): Promise<void> => {
    while (running) {
      const i = n++
      const token = randomUUID()
      const path = typeof init.path === 'function' ? init.path(i) : init.path ?? '/'
      const o: Outcome = { token, startedAt: performance.now(), endedAt: 0, status: undefined, error: undefined, answer: undefined }
      try {
        const res = await request(`${init.origin}${path}`, {
          dispatcher: agent, method: (init.method ?? 'GET') as 'GET', headers: { host: init.host, 'x-token': token },
          body: init.body?.(i), headersTimeout: init.headersTimeoutMs ?? 30_000, bodyTimeout: 30_000,
        })
        o.status = res.statusCode
        const text = await res.body.text()
        if ((res.headers['content-type'] ?? '').toString().startsWith('application/json')) o.answer = JSON.parse(text) as Outcome['answer']
        else if (res.statusCode !== 200) o.error = `${res.headers['edgeproxy-error'] as string | undefined ?? ''} ${text.slice(0, 200)}`
      } catch (err) {
        o.error = `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`
      }
      o.endedAt = performance.now()
      outcomes.push(o)
      if (init.gapMs !== undefined) await new Promise((r) => setTimeout(r, init.gapMs))
    }
  }
  const loops = Array.from({ length: init.concurrency }, () => loop())
  let stopped: Promise<Outcome[]> | undefined
  return {
    outcomes,
    stop() {
      running = false
      stopped ??= Promise.all(loops).then(() => agent.close()).then(() => outcomes)
      return stopped
    },
  }
}

/** Failed outcomes (anything but a 200 with the Machine's answer), for a readable assertion message. */
export function failures(outcomes: Outcome[]): Array<Pick<Outcome, 'status' | 'error'>> {
  return outcomes.filter((o) => o.status !== 200 || o.answer === undefined).map((o) => ({ status: o.status, error: o.error }))
}

export function percentileMs(outcomes: Outcome[], p: number): number {
  const sorted = outcomes.map((o) => o.endedAt - o.startedAt).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}
