import * as A from '@automerge/automerge'
import type { AppConfig } from '../schemas/app-config.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'
import type { DocId } from '../schemas/catalog-records.js'
import * as W from './docs/app-doc-writes.js'
import { kindOf } from './doc-registry.js'

export interface WarmUpOptions {
  /** Rounds over the document pair (default 10: enough for the hot functions to reach TurboFan). */
  rounds?: number
  /** Writes each side makes apart (default 30). */
  writesPerSide?: number
  signal?: AbortSignal
}

export interface WarmUpResult {
  rounds: number
  ms: number
  /** Stopped by the signal before the last round (the node is stopping). */
  aborted: boolean
}

const DOC_ID: DocId = 'app:warm-up'
const ROOT_ACTOR = '00'.repeat(16)
const SIDE_ACTORS = ['aa'.repeat(16), 'bb'.repeat(16)] as const

/** A deployed config of typical size: value sizes decide which of Automerge's column code runs hot. */
const FLY_TOML = `app = "warm-up"
primary_region = "ams"
[env]
LOG_LEVEL = "info"
[http_service]
internal_port = 8080
force_https = true
auto_stop_machines = "stop"
auto_start_machines = true
min_machines_running = 1
[http_service.concurrency]
type = "requests"
soft_limit = 200
hard_limit = 250
[[http_service.checks]]
interval = "15s"
timeout = "2s"
path = "/health"
`

/**
 * V8 first runs Automerge's wasm through its baseline compiler (Liftoff) and compiles a function with its
 * optimizing compiler (TurboFan) only once the function has run hot. The functions a heal runs hot — the
 * sync protocol, applying and loading hundreds of changes, splicing them into the op set — stay cold on a
 * node until its first heal, so that heal ran them as slow baseline code while every node of the fleet
 * compiled them at once: TurboFan was over a third of the CPU of the 5-daemon hardening heal, which took
 * about twice as long as with the warm-up (docs/benchmarks.md). The warm-up runs those paths over a pair of
 * small app documents written apart, the way two sides of a partition write them, once the node has started;
 * the compiles then happen on V8's background threads before the node is busy. It never touches the catalog.
 *
 * One step per macrotask: a step holds the event loop a few ms once warm, up to ~65 ms for the first ones.
 */
export async function warmUpAutomerge(options: WarmUpOptions = {}): Promise<WarmUpResult> {
  const rounds = options.rounds ?? 10
  const started = performance.now()
  const steps = warmUpSteps(options.writesPerSide ?? 30, rounds)
  let done = 0
  try {
    for (;;) {
      await new Promise<void>((resolve) => setImmediate(resolve))
      if (options.signal?.aborted === true) break
      const step = steps.next()
      if (step.done === true) break
      if (step.value === 'round') done++
    }
  } finally {
    steps.return(undefined) // frees what the steps hold
  }
  return { rounds: done, ms: performance.now() - started, aborted: done < rounds }
}

/** The warm-up cut into pieces of a few ms each (yields between them); `round` after each heal round. */
function* warmUpSteps(writes: number, rounds: number): Generator<'step' | 'round', void, undefined> {
  const at = 1_700_000_000_000
  const config = parseAppConfigText(FLY_TOML).config
  let base = A.change(A.init<Record<string, unknown>>({ actor: ROOT_ACTOR }), { time: 0 }, (d) => {
    Object.assign(d, kindOf(DOC_ID).rootFields(DOC_ID))
  })
  const sides: Array<A.Doc<unknown>> = []
  try {
    // a shared start (a deploy and a few Machines), then each side redeploys and writes its own and the shared Machines
    base = A.change(base, (d: Record<string, any>) => { // eslint-disable-line @typescript-eslint/no-explicit-any
      W.writeAppDeploy(d, config, [], at)
      for (let m = 0; m < 4; m++) W.writeMachineCreate(d, machine(`shared${m}`), at)
    })
    yield 'step'
    for (const [s, actor] of SIDE_ACTORS.entries()) {
      sides[s] = A.clone(base, { actor })
      for (let k = 0; k < writes; k++) {
        sides[s] = A.change(sides[s], (d: Record<string, any>) => { // eslint-disable-line @typescript-eslint/no-explicit-any
          if (k % 3 === 0) W.writeAppDeploy(d, { ...config, env: { ...config.env, SIDE: String(s), K: String(k) } } satisfies AppConfig, [], at + k)
          else if (k % 3 === 1) W.writeMachineCreate(d, machine(`side${s}m${k}`), at + k)
          else W.writeDesired(d, `shared${k % 4}`, k % 2 === 0 ? 'stopped' : 'started', 'warm-up', at + k)
        })
        if (k % 5 === 4) yield 'step'
      }
    }
    const baseHeads = A.getHeads(base)
    const pair: Pair = {
      saved: [A.save(sides[0]), A.save(sides[1])],
      apart: [A.getChangesSince(sides[0], baseHeads), A.getChangesSince(sides[1], baseHeads)],
      all: A.getAllChanges(sides[0]),
    }
    for (let r = 0; r < rounds; r++) {
      yield 'step'
      yield * healOnce(pair)
      yield 'round'
    }
  } finally {
    for (const doc of [base, ...sides]) A.free(doc)
  }
}

interface Pair {
  /** Each side saved whole, and the changes each side made apart. */
  saved: [Uint8Array, Uint8Array]
  apart: [Uint8Array[], Uint8Array[]]
  all: Uint8Array[]
}

function machine(id: string): W.NewMachine {
  return { id, app: 'warm-up', region: 'ams', node: 'warm-up', spec: { cmd: [], env: {}, processGroup: 'app' }, appVersion: 1, desired: 'started', reason: 'warm-up' }
}

/**
 * What a heal does with one document written on both sides: a push applied onto an empty document, sync
 * rounds, a push applied onto a copy and read back (changes, diff, save). Each lineage's last document is
 * freed (an Automerge update hands the same wasm handle on to the document it returns).
 */
function* healOnce(pair: Pair): Generator<'step', void, undefined> {
  let fresh: A.Doc<unknown> | undefined
  let left: A.Doc<unknown> | undefined
  let right: A.Doc<unknown> | undefined
  let loaded: A.Doc<unknown> | undefined
  let copy: A.Doc<unknown> | undefined
  try {
    // a pushed document this node lacks: applied onto an empty one
    fresh = A.applyChanges(A.init<unknown>(), pair.all)[0]
    A.getMissingDeps(fresh, [])
    yield 'step'
    // each side loaded from its bytes, as a node loads a document from disk
    left = A.load<unknown>(pair.saved[0], { actor: SIDE_ACTORS[0] })
    right = A.load<unknown>(pair.saved[1], { actor: SIDE_ACTORS[1] })
    const before = A.getHeads(left)
    // Automerge's sync rounds between the two sides until neither has anything to say
    let ls = A.initSyncState()
    let rs = A.initSyncState()
    for (let k = 0; k < 8; k++) {
      let message: Uint8Array | null
      ;[ls, message] = A.generateSyncMessage(left, ls)
      const fromLeft = message !== null
      if (message !== null) {
        A.decodeSyncMessage(message)
        ;[right, rs] = A.receiveSyncMessage(right, rs, message)
      }
      ;[rs, message] = A.generateSyncMessage(right, rs)
      if (message !== null) [left, ls] = A.receiveSyncMessage(left, ls, message)
      if (!fromLeft && message === null) break
      yield 'step'
    }
    yield 'step'
    // a push of the other side's changes onto a copy, and what the write pipeline reads back from it
    loaded = A.load<unknown>(pair.saved[0])
    copy = A.clone(loaded, { actor: SIDE_ACTORS[0] })
    copy = A.applyChanges(copy, pair.apart[1])[0]
    A.getChangesSince(copy, before)
    A.diff(copy, before, A.getHeads(copy))
    A.save(copy)
  } finally {
    for (const doc of [fresh, left, right, loaded, copy]) if (doc !== undefined) A.free(doc)
  }
}
