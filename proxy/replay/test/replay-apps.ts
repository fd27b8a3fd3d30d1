import type { IncomingMessage, ServerResponse } from 'node:http'
import { echoHandler, type Harness, httpApp, type MachineHandler, type TestMachine } from '../../test/harness.js'

/** What a Machine of these tests answers with (echoHandler's JSON). */
export interface Echo {
  machine: string
  method: string
  url: string
  headers: Record<string, string>
  body: string
}

/** type = "requests": every request is balanced on its own (no per-connection stickiness). */
export const PER_REQUEST = '[services.concurrency]\ntype = "requests"\nsoft_limit = 10'

/** Answers with a fly-replay header (or JSON body) instead of serving. */
export function replayWith(res: ServerResponse, value: string, status = 200): void {
  res.writeHead(status, { 'fly-replay': value, 'content-length': 0 })
  res.end()
}

/**
 * A Machine that asks for a replay the first time it sees a request (no fly-replay-src, no
 * fly-replay-failed) and serves (echo) otherwise, so a fallback to it gets an answer.
 */
export function replaysOnce(directive: (req: IncomingMessage, m: TestMachine) => string | undefined): MachineHandler {
  return (req, res, m) => {
    const d = req.headers['fly-replay-src'] === undefined && req.headers['fly-replay-failed'] === undefined ? directive(req, m) : undefined
    if (d === undefined) { echoHandler(req, res, m); return }
    req.resume()
    req.on('end', () => replayWith(res, d))
  }
}

export interface RegionApp {
  port: number
  /** Machines by name: region code, with a suffix when a region has several (`iad`, `iad2`). */
  byName: Record<string, TestMachine>
}

/**
 * App `app` with one http Machine per entry of `regions`, all on this one node (the backhaul makes other
 * nodes' Machines reachable the same way; routing only looks at each Machine's region).
 */
export async function regionApp(h: Harness, app: string, regions: string[], handler: MachineHandler, extra = PER_REQUEST): Promise<RegionApp> {
  const { port, machines } = await h.httpMachines(regions.length, handler)
  await h.deploy(httpApp(app, port, extra))
  const byName: Record<string, TestMachine> = {}
  for (let i = 0; i < regions.length; i++) {
    const region = regions[i].replace(/\d+$/, '')
    await h.addMachine(app, machines[i], { region })
    byName[regions[i]] = machines[i]
  }
  return { port, byName }
}

/** The fly-replay-src fields a Machine saw. */
export function srcFields(value: string | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const part of (value ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1)
  }
  return out
}
