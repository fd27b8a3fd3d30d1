import type { Logger } from 'pino'
import type { CatalogReplica, PeerSyncState } from '../catalog/catalog-api.js'
import type { DocId } from '../schemas/catalog-records.js'
import { GOSSIP_LIMITS, type SyncMessages, type SyncPush } from '../schemas/gossip-messages.js'
import { type Digest, differingDocs, digestEntries, sameBytes } from './digest.js'
import { type SyncChannel, SyncProtocolError } from './sync-channel.js'
import type { SessionRelay } from './sync-relay.js'

/**
 * Anti-entropy over one `/edgeproxy/sync/2` stream (DESIGN §3): compare digest hashes, then digests. A
 * document one side is ahead on (it holds every head the other reported, or the other lacks it) is pushed
 * as exactly the changes the other lacks; after a partition that is most of them (new apps, apps written on
 * one side only). Only documents written on both sides run Automerge's sync protocol, in lock step — one
 * frame carries one message per document. The responder's first message of each rides with its pushes
 * (`opening`), so a document written on both sides takes one round trip: the initiator sends the changes the
 * responder lacks, the answer brings the changes it lacks and shows both at the same heads (`syncLevel`).
 * A document whose messages fail (poison: the catalog refuses it) is dropped from the session; the others go on.
 */
export type SyncReplica = Pick<CatalogReplica, 'nodeName' | 'digest' | 'digestHash' | 'newSyncState' | 'generateSyncMessage' | 'receiveSyncMessage' | 'syncLevel' | 'changesForPeer' | 'applyRemoteChanges' | 'isQuarantined'>

export interface SyncSessionContext {
  replica: SyncReplica
  /** Peer id of the other side, passed to the catalog as the origin of what it sends. */
  peer: string
  log: Logger
  /** Documents per sync frame. */
  docsPerRound: number
  /** A document still differing after this many rounds is left for the next session. */
  maxRoundsPerDoc: number
  /** Byte budget for the messages of one outgoing frame. */
  frameBudgetBytes: number
  /** Told the partner's digest hash, then the changes each applied sync message brought (gossip/sync-relay.ts). */
  relay?: SessionRelay
}

export interface SyncSessionResult {
  /** Digest hashes were equal: nothing was exchanged beyond the hellos. */
  inSync: boolean
  /** Documents that differed. */
  docs: number
  /** Documents brought level by a push, either way (no Automerge rounds). */
  pushed: number
  /**
   * A document pushed to this node turned out to hold changes the pusher lacks (written here after this node's
   * digest was taken): another session, started right away, gives them back.
   */
  peerLacks: boolean
  /** Documents brought to agreement in this session. */
  converged: number
  /** Documents dropped after an error (quarantined, failing) or too many rounds. */
  failed: number
  rounds: number
}

export async function syncAsInitiator(ch: SyncChannel, ctx: SyncSessionContext): Promise<SyncSessionResult> {
  const myHash = ctx.replica.digestHash()
  await ch.write({ t: 'hello', v: 2, node: ctx.replica.nodeName, digestHash: myHash })
  const hello = await ch.read('hello')
  ctx.relay?.hello(hello.digestHash)
  if (sameBytes(hello.digestHash, myHash)) {
    await ch.write({ t: 'bye' })
    return { inSync: true, docs: 0, pushed: 0, peerLacks: false, converged: 0, failed: 0, rounds: 0 }
  }
  const mine = ctx.replica.digest()
  await ch.write({ t: 'digest', docs: digestEntries(mine) })
  const theirs: Digest = new Map((await ch.read('digest')).docs)
  const docs = differingDocs(mine, theirs).filter((d) => !ctx.replica.isQuarantined(d))
  // the responder pushes first; reading all of it before writing means the two never both block on a full window
  const incoming = await readPushes(ch, ctx, theirs)
  const { pushed: outgoing } = await writePushes(ch, ctx, mine, theirs, docs, false)
  const contested = docs.filter((d) => !outgoing.has(d) && !incoming.docs.has(d))
  const opened = await receiveOpenings(ctx, contested, incoming.openings)
  // the rounds run while the catalog applies what was pushed: different documents, and no round trip waits for it
  const result = await runRounds(ch, ctx, contested.filter((d) => opened.get(d) !== null), opened)
  await ch.write({ t: 'bye' })
  const { failed: pushFailed, peerLacks } = await incoming.applied
  const pushed = outgoing.size + incoming.docs.size - pushFailed
  const openingsFailed = [...opened.values()].filter((state) => state === null).length
  return { inSync: false, docs: docs.length, pushed, peerLacks, rounds: result.rounds, converged: result.converged + pushed, failed: result.failed + pushFailed + openingsFailed }
}

/**
 * Sends what the other side lacks of every document this node is ahead on, in frames under the budget (the
 * last says `more: false`). A document with a long or big history is left to the sync rounds. With `open`
 * (the responder), the last frame also opens Automerge's protocol for documents this node holds but does
 * not push (`openings`). Returns the documents pushed and the sync states of those opened.
 */
async function writePushes(ch: SyncChannel, ctx: SyncSessionContext, mine: Digest, theirs: Digest, docs: DocId[], open: boolean): Promise<{ pushed: Set<DocId>; opened: Map<DocId, PeerSyncState> }> {
  const pushed = new Set<DocId>()
  let frame: SyncPush['docs'] = []
  let bytes = 0
  for (const docId of docs) {
    if (!mine.has(docId)) continue // the other side holds it and this node does not: it pushes
    let changes: Uint8Array[] | undefined
    try {
      changes = await ctx.replica.changesForPeer(docId, theirs.get(docId))
    } catch (err) {
      ctx.log.warn({ err, docId }, 'cannot read the changes of a document to push; left to the sync rounds')
      continue
    }
    if (changes === undefined || changes.length === 0 || changes.length > GOSSIP_LIMITS.pushChangesPerDoc) continue
    let size = 0
    for (const c of changes) size += c.byteLength
    if (size > ctx.frameBudgetBytes) continue
    if (frame.length > 0 && (bytes + size > ctx.frameBudgetBytes || frame.length >= GOSSIP_LIMITS.syncMessagesPerFrame)) {
      await ch.write({ t: 'push', docs: frame, more: true })
      frame = []
      bytes = 0
    }
    frame.push({ docId, changes })
    bytes += size
    pushed.add(docId)
  }
  const { opening, opened } = open
    ? await openings(ctx, docs.filter((d) => mine.has(d) && !pushed.has(d)), ctx.frameBudgetBytes - bytes)
    : { opening: [], opened: new Map<DocId, PeerSyncState>() }
  await ch.write({ t: 'push', docs: frame, more: false, ...(opening.length > 0 ? { opening } : {}) })
  return { pushed, opened }
}

/**
 * The first sync message of each document written on both sides — or that the other side is ahead on and
 * will push; this side cannot tell the two apart, and a message it did not need costs the other nothing
 * but reading it. Sent with the pushes, it saves the round trip that would otherwise begin the rounds.
 */
async function openings(ctx: SyncSessionContext, docs: DocId[], budget: number): Promise<{ opening: NonNullable<SyncPush['opening']>; opened: Map<DocId, PeerSyncState> }> {
  const opening: NonNullable<SyncPush['opening']> = []
  const opened = new Map<DocId, PeerSyncState>()
  let bytes = 0
  for (const docId of docs) {
    if (opening.length >= GOSSIP_LIMITS.openingsPerSession) break
    try {
      const state = ctx.replica.newSyncState(docId)
      const msg = await ctx.replica.generateSyncMessage(state)
      if (msg === null || bytes + msg.byteLength > budget) continue
      bytes += msg.byteLength
      opening.push({ docId, msg })
      opened.set(docId, state)
    } catch (err) {
      ctx.log.debug({ err, docId }, 'cannot open the sync of a document; the rounds will')
    }
  }
  return { opening, opened }
}

/**
 * Applies the other side's openings of documents neither side pushed, each to a fresh sync state. Returns
 * those states; null for a document whose opening the catalog refused (dropped from the session).
 */
async function receiveOpenings(ctx: SyncSessionContext, contested: DocId[], openings: Map<DocId, Uint8Array>): Promise<Map<DocId, PeerSyncState | null>> {
  const opened = new Map<DocId, PeerSyncState | null>()
  await Promise.all(contested.filter((d) => openings.has(d) && !ctx.replica.isQuarantined(d)).map(async (docId) => {
    const state = safely(ctx, docId, () => ctx.replica.newSyncState(docId))
    opened.set(docId, state !== null && await applyAnswer(ctx, state, docId, openings.get(docId)!) ? state : null)
  }))
  return opened
}

/**
 * Reads the other side's push frames and hands each document to the catalog as it arrives (its group commit
 * writes a frame's documents in one batch). `applied` resolves once all are applied: how many the catalog
 * refused, and whether this node holds changes of a pushed document beyond the heads the pusher reported.
 */
async function readPushes(ch: SyncChannel, ctx: SyncSessionContext, theirs: Digest): Promise<{ docs: Set<DocId>; openings: Map<DocId, Uint8Array>; applied: Promise<{ failed: number; peerLacks: boolean }> }> {
  const docs = new Set<DocId>()
  const openings = new Map<DocId, Uint8Array>()
  const applying: Array<Promise<PushOutcome>> = []
  for (;;) {
    const frame = await ch.read('push')
    for (const { docId, msg } of frame.opening ?? []) {
      if (openings.has(docId)) throw new SyncProtocolError(`document ${docId} opened twice in one session`)
      if (openings.size >= GOSSIP_LIMITS.openingsPerSession) throw new SyncProtocolError(`more than ${GOSSIP_LIMITS.openingsPerSession} documents opened in one session`)
      openings.set(docId, msg)
    }
    for (const { docId, changes } of frame.docs) {
      if (docs.has(docId)) throw new SyncProtocolError(`document ${docId} pushed twice in one session`)
      if (docs.size >= GOSSIP_LIMITS.digestDocs) throw new SyncProtocolError(`more than ${GOSSIP_LIMITS.digestDocs} documents pushed in one session`)
      docs.add(docId)
      applying.push(applyPush(ctx, docId, changes, theirs.get(docId)))
    }
    if (!frame.more) break
  }
  const applied = Promise.all(applying).then((outcomes) => ({
    failed: outcomes.filter((o) => o === 'failed').length,
    peerLacks: outcomes.includes('peer lacks'),
  }))
  return { docs, openings, applied }
}

type PushOutcome = 'level' | 'peer lacks' | 'failed'

async function applyPush(ctx: SyncSessionContext, docId: DocId, changes: Uint8Array[], pusherHeads: readonly string[] | undefined): Promise<PushOutcome> {
  if (ctx.replica.isQuarantined(docId)) return 'failed'
  try {
    const r = await ctx.replica.applyRemoteChanges(docId, changes, ctx.peer, 'background')
    if (r.changes.length > 0) ctx.relay?.learned(docId, r.changes)
    // the pusher saw this node's digest; a change written here since is not among what it holds
    const back = pusherHeads === undefined ? undefined : await ctx.replica.changesForPeer(docId, pusherHeads)
    if (back === undefined || back.length === 0) return 'level'
    // what it pushed may go past the heads it reported (written there meanwhile): those it holds
    const sent = new Set(changes.map(bytesKey))
    return back.some((c) => !sent.has(bytesKey(c))) ? 'peer lacks' : 'level'
  } catch (err) {
    ctx.log.warn({ err, docId }, 'applying pushed changes failed, document skipped')
    return 'failed'
  }
}

const bytesKey = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')

interface DocProgress { state: PeerSyncState; rounds: number; carry: Uint8Array | null | undefined }

async function runRounds(ch: SyncChannel, ctx: SyncSessionContext, docs: DocId[], opened: Map<DocId, PeerSyncState | null>): Promise<Pick<SyncSessionResult, 'converged' | 'failed' | 'rounds'>> {
  const active = new Map<DocId, DocProgress>()
  let converged = 0
  let failed = 0
  let rounds = 0
  const queue = [...docs]
  while (active.size > 0 || queue.length > 0) {
    while (active.size < ctx.docsPerRound && queue.length > 0) {
      const docId = queue.shift()!
      try {
        active.set(docId, { state: opened.get(docId) ?? ctx.replica.newSyncState(docId), rounds: 0, carry: undefined })
      } catch (err) {
        failed++
        ctx.log.warn({ err, docId }, 'cannot sync document, skipped')
      }
    }
    const out: SyncMessages['msgs'] = []
    let bytes = 0
    for (const [docId, p] of active) {
      let msg: Uint8Array | null
      try {
        // a message generated last round but left out of a full frame is sent now, never regenerated
        msg = p.carry !== undefined ? p.carry : await ctx.replica.generateSyncMessage(p.state)
      } catch (err) {
        active.delete(docId)
        failed++
        ctx.log.warn({ err, docId }, 'generating a sync message failed, document skipped')
        continue
      }
      p.carry = undefined
      if (msg === null && p.rounds > 0) {
        // Automerge has nothing to send only once the partner's last message (sent after it applied all of ours)
        // showed the same heads as this node's: level. A round of two nulls would only confirm it.
        active.delete(docId)
        converged++
        continue
      }
      const size = msg?.byteLength ?? 0
      if (out.length > 0 && bytes + size > ctx.frameBudgetBytes) { p.carry = msg; continue }
      bytes += size
      out.push({ docId, msg })
    }
    if (out.length === 0) continue // every active document failed; the queue may hold more
    rounds++
    await ch.write({ t: 'sync', msgs: out })
    const reply = await ch.read('sync')
    const answers = new Map(reply.msgs.map((m) => [m.docId, m.msg]))
    for (const { docId } of out) if (!answers.has(docId)) throw new SyncProtocolError(`sync reply lacks document ${docId}`)
    // the whole frame goes to the catalog at once, so that its group commit writes it in one batch (one
    // fsync) instead of one batch per document awaited in turn: a heal's many documents land faster
    const applied = await Promise.all(out.map(({ docId }) => applyAnswer(ctx, active.get(docId)!.state, docId, answers.get(docId)!)))
    for (const [i, { docId, msg: sent }] of out.entries()) {
      const p = active.get(docId)!
      const answer = answers.get(docId)!
      if (!applied[i]) {
        active.delete(docId)
        failed++
        continue
      }
      p.rounds++
      // the answer was made after the partner applied what this node sent; showing this node's heads, it is level
      if ((sent === null && answer === null) || (answer !== null && ctx.replica.syncLevel(p.state))) {
        active.delete(docId)
        converged++
      } else if (p.rounds >= ctx.maxRoundsPerDoc) {
        active.delete(docId)
        failed++
        ctx.log.warn({ docId, rounds: p.rounds }, 'document still differs after the round limit; next session continues')
      }
    }
  }
  return { converged, failed, rounds }
}

/** False when the catalog refused the message (the document is then dropped from the session). */
async function applyAnswer(ctx: SyncSessionContext, state: PeerSyncState, docId: DocId, answer: Uint8Array | null): Promise<boolean> {
  if (answer === null) return true
  try {
    await receive(ctx, state, docId, answer)
    return true
  } catch (err) {
    ctx.log.warn({ err, docId }, 'applying a sync message failed, document skipped')
    return false
  }
}

async function receive(ctx: SyncSessionContext, state: PeerSyncState, docId: DocId, msg: Uint8Array): Promise<void> {
  const r = await ctx.replica.receiveSyncMessage(state, msg, ctx.peer)
  if (r.changes.length > 0) ctx.relay?.learned(docId, r.changes)
}

/** Answers one session. Returns when the initiator says bye; throws on a protocol error or timeout. */
export async function syncAsResponder(ch: SyncChannel, ctx: SyncSessionContext & { maxDocs: number }): Promise<SyncSessionResult> {
  const hello = await ch.read('hello') // not inside relay?.hello(…): without a relay the read would be skipped
  ctx.relay?.hello(hello.digestHash)
  await ch.write({ t: 'hello', v: 2, node: ctx.replica.nodeName, digestHash: ctx.replica.digestHash() })
  const next = await ch.read('digest', 'bye')
  if (next.t === 'bye') return { inSync: true, docs: 0, pushed: 0, peerLacks: false, converged: 0, failed: 0, rounds: 0 }
  const theirs: Digest = new Map(next.docs)
  const mine = ctx.replica.digest()
  await ch.write({ t: 'digest', docs: digestEntries(mine) })
  const differing = differingDocs(mine, theirs).filter((d) => !ctx.replica.isQuarantined(d))
  const { pushed: outgoing, opened } = await writePushes(ch, ctx, mine, theirs, differing, true)
  const incoming = await readPushes(ch, ctx, theirs)
  if (incoming.openings.size > 0) throw new SyncProtocolError('only the responder opens documents in its pushes')
  const states = new Map<DocId, PeerSyncState | null>() // null: failed, answered with null from then on
  let rounds = 0
  let failed = 0
  for (;;) {
    const frame = await ch.read('sync', 'bye')
    if (frame.t === 'bye') {
      const { failed: pushFailed, peerLacks } = await incoming.applied
      const pushed = outgoing.size + incoming.docs.size - pushFailed
      return { inSync: false, docs: differing.length, pushed, peerLacks, converged: pushed + states.size - failed, failed: failed + pushFailed, rounds }
    }
    rounds++
    if (new Set(frame.msgs.map((m) => m.docId)).size !== frame.msgs.length) throw new SyncProtocolError('a document appears twice in one sync frame')
    for (const { docId } of frame.msgs) {
      if (states.has(docId)) continue
      if (states.size >= ctx.maxDocs) throw new SyncProtocolError(`more than ${ctx.maxDocs} documents in one session`)
      const state = ctx.replica.isQuarantined(docId) ? null : opened.get(docId) ?? safely(ctx, docId, () => ctx.replica.newSyncState(docId))
      if (state === null) failed++
      states.set(docId, state)
    }
    // every document of the frame at once: the catalog's group commit writes them in one batch
    const reply: SyncMessages['msgs'] = await Promise.all(frame.msgs.map(async ({ docId, msg }) => {
      const state = states.get(docId)
      if (state === null || state === undefined) return { docId, msg: null }
      try {
        if (msg !== null) await receive(ctx, state, docId, msg)
        return { docId, msg: await ctx.replica.generateSyncMessage(state) }
      } catch (err) {
        ctx.log.warn({ err, docId }, 'sync of a document failed, document skipped')
        states.set(docId, null)
        failed++
        return { docId, msg: null }
      }
    }))
    await ch.write({ t: 'sync', msgs: reply })
  }
}

function safely(ctx: SyncSessionContext, docId: DocId, fn: () => PeerSyncState): PeerSyncState | null {
  try {
    return fn()
  } catch (err) {
    ctx.log.warn({ err, docId }, 'cannot sync document, skipped')
    return null
  }
}
