import type { Socket } from 'node:net'
import { EdgeProxyError } from '../../schemas/errors.js'
import { MAX_DIRECTIVE_BYTES } from '../replay/replay-directive.js'
import { CHUNKED_ERROR, CHUNKED_MORE, type ChunkDataSink, ChunkedScanner } from './chunked.js'
import { BODY_CHUNKED, BODY_LENGTH, BODY_NONE, findHeadEnd, HEAD_BARE_LF, HEAD_INCOMPLETE, type RequestHead } from './request-head.js'
import { NO_EDITS, type ResponseEdits } from './response-edits.js'
import { BODY_UNTIL_CLOSE, parseResponseHead, type ResponseHead } from './response-head.js'
import { clientResponseHead, type ClientFraming, informationalHead } from './response-writer.js'

const MAX_RESPONSE_HEAD = 128 * 1024
const HELD_NONE = 0
const HELD_READING = 1
const HELD_DONE = 2

/** What the relay tells the session it works for. */
export interface RelayOwner {
  /** The request body has been sent completely. */
  readonly requestDone: boolean
  /** Head and body reached the client. */
  responseComplete(): void
  /** The Machine's response was invalid before anything reached the client. */
  responseInvalid(message: string): void
  /** The response broke after bytes reached the client. */
  responseBroken(reason: string): void
  /** 101 answered an Upgrade request: bytes flow both ways from now on. */
  upgraded(): void
  /** The client is not keeping up: stop reading from the Machine until it drains. */
  pauseUpstream(): void
  /**
   * The response asks for a replay (`res.replay` or `res.replayJson`, FLY-SPEC §6) and was read as far as
   * needed; nothing of it reached the client. `body` is the JSON form's directive when it was read whole.
   * `reusable` tells whether the Machine connection is still in step.
   */
  replayResponse(res: ResponseHead, body: Buffer | undefined): void
}

/**
 * The forward phase's way back (shared/PERF-NOTES.md): the Machine's response head is parsed by hand and
 * rewritten, written with the first body bytes in one write, and the body is passed on as it comes —
 * chunked framing tracked byte by byte, decoded only for an HTTP/1.0 client. It is the one place that sees
 * a response head before the client does (the fly-replay issue hooks in at `res.replay`).
 */
export class ResponseRelay {
  res: ResponseHead | undefined
  /** Some byte came from the Machine (a retry is no longer safe). */
  bytesSeen = false
  /** Some byte went to the client (an error can no longer be answered). */
  started = false
  /** The Machine connection is in step after this response and may serve another. */
  reusable = true
  framing: ClientFraming = { dechunk: false, close: false }
  /** The port's http_options.response, known once the request is routed. */
  edits: ResponseEdits = NO_EDITS
  private req: RequestHead | undefined
  private reqId = ''
  private buf: Buffer | undefined
  private scanFrom = 0
  private left = 0
  private readonly chunks = new ChunkedScanner()
  /** A response asking for a replay: HELD_READING while its body is read (never passed on), then HELD_DONE. */
  private held = HELD_NONE
  private heldParts: Buffer[] = []
  private heldBytes = 0
  private readonly collect: ChunkDataSink = (b, s, e) => {
    this.heldBytes += e - s
    if (this.heldBytes <= MAX_DIRECTIVE_BYTES) this.heldParts.push(b.subarray(s, e))
  }

  constructor(private readonly client: Socket, private readonly owner: RelayOwner, private readonly serverHeader: string) {}

  /** A new exchange; `close` when the client connection ends after it whatever the Machine says. */
  begin(req: RequestHead, reqId: string, edits: ResponseEdits, close: boolean): void {
    this.req = req
    this.reqId = reqId
    this.edits = edits
    this.res = undefined
    this.buf = undefined
    this.scanFrom = 0
    this.bytesSeen = false
    this.started = false
    this.reusable = true
    this.held = HELD_NONE
    this.framing = { dechunk: false, close }
  }

  /** The request goes to a replay target (edits of its port): nothing of the held response counts. */
  again(edits: ResponseEdits): void {
    this.edits = edits
    this.res = undefined
    this.held = HELD_NONE
    this.heldParts = []
    this.heldBytes = 0
    this.restart()
  }

  /** A new attempt on another connection: nothing of the previous one counts. */
  restart(): void {
    this.buf = undefined
    this.scanFrom = 0
    this.bytesSeen = false
    this.reusable = true
  }

  onData(chunk: Buffer): void {
    this.bytesSeen = true
    if (this.res === undefined) this.readHead(chunk)
    else if (this.held === HELD_NONE) this.forwardBody(chunk, 0)
    else if (this.held === HELD_READING) this.holdBody(chunk)
  }

  /** The Machine sent FIN: true when that completes a close-delimited response. */
  onEnd(): boolean {
    if (this.res === undefined || this.res.bodyKind !== BODY_UNTIL_CLOSE) return false
    this.reusable = false
    if (this.held === HELD_READING) this.releaseHeld(true)
    else if (this.held === HELD_NONE) this.owner.responseComplete()
    return true
  }

  get complete(): boolean {
    const res = this.res
    if (res === undefined) return false
    if (res.bodyKind === BODY_LENGTH) return this.left === 0
    if (res.bodyKind === BODY_CHUNKED) return this.chunks.done
    return res.bodyKind === BODY_NONE
  }

  private readHead(chunk: Buffer): void {
    let buf = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk])
    const req = this.req!
    for (;;) {
      const end = findHeadEnd(buf, this.scanFrom)
      if (end === HEAD_INCOMPLETE) {
        if (buf.length > MAX_RESPONSE_HEAD) { this.owner.responseInvalid('response head larger than 128 KiB'); return }
        this.buf = buf
        this.scanFrom = buf.length
        return
      }
      if (end === HEAD_BARE_LF) { this.owner.responseInvalid('bare LF in the response head'); return }
      const res = parseResponseHead(buf, 0, end, req.method === 'HEAD', this.edits)
      if (res instanceof EdgeProxyError) { this.owner.responseInvalid(res.message); return }
      const rest = end < buf.length ? buf.subarray(end) : undefined
      this.scanFrom = 0
      this.buf = undefined
      if (res.status === 101 && req.upgrade !== undefined) { this.upgrade(res, rest); return }
      if (res.status < 200) {
        // 100 Continue, 103 Early Hints: pass on and keep reading the final response
        this.started = true
        this.client.write(informationalHead(res), 'latin1')
        if (rest === undefined) return
        buf = rest
        continue
      }
      if (res.replay !== undefined || res.replayJson) { this.hold(res, rest); return }
      this.writeHead(res, rest)
      return
    }
  }

  private writeHead(res: ResponseHead, rest: Buffer | undefined): void {
    const req = this.req!
    this.res = res
    this.reusable = res.keepAlive
    const framing = this.framing
    if (res.bodyKind === BODY_CHUNKED && req.minor === 0) { framing.dechunk = true; framing.close = true }
    if (res.bodyKind === BODY_UNTIL_CLOSE) framing.close = true
    // the Machine answered before the body was sent: neither connection can be trusted to be in step
    if (!this.owner.requestDone) { framing.close = true; this.reusable = false }
    const head = clientResponseHead(req, res, framing, { requestId: this.reqId, serverHeader: this.serverHeader, edits: this.edits, via: '1.1' })
    this.started = true
    this.left = res.bodyKind === BODY_LENGTH ? res.contentLength : 0
    if (res.bodyKind === BODY_CHUNKED) this.chunks.reset()
    if (rest === undefined || res.bodyKind === BODY_NONE || framing.dechunk) {
      if (rest !== undefined && res.bodyKind === BODY_NONE) this.reusable = false // bytes after a bodyless response
      this.client.write(head, 'latin1')
      if (res.bodyKind === BODY_NONE) this.owner.responseComplete()
      else if (rest !== undefined) this.forwardBody(rest, 0)
      return
    }
    // head and the first body bytes in one write
    const n = this.bodyBytesIn(rest, 0)
    if (n < 0) return
    const out = Buffer.allocUnsafe(head.length + n)
    out.write(head, 0, 'latin1')
    rest.copy(out, head.length, 0, n)
    if (!this.client.write(out)) this.owner.pauseUpstream()
    if (n < rest.length) this.reusable = false
    if (this.complete) this.owner.responseComplete()
  }

  /** How many bytes of buf[start..] belong to the body; advances the framing state. -1: bad framing. */
  private bodyBytesIn(buf: Buffer, start: number): number {
    const res = this.res!
    if (res.bodyKind === BODY_LENGTH) {
      const n = Math.min(this.left, buf.length - start)
      this.left -= n
      return n
    }
    if (res.bodyKind === BODY_CHUNKED) {
      const r = this.chunks.scan(buf, start, buf.length)
      if (r === CHUNKED_ERROR) { this.owner.responseBroken('invalid chunked encoding from the Machine'); return -1 }
      return (r === CHUNKED_MORE ? buf.length : r) - start
    }
    return buf.length - start
  }

  private forwardBody(chunk: Buffer, start: number): void {
    if (this.framing.dechunk) {
      const parts: Buffer[] = []
      const r = this.chunks.scan(chunk, start, chunk.length, (b, s, e) => { parts.push(b.subarray(s, e)) })
      if (r === CHUNKED_ERROR) { this.owner.responseBroken('invalid chunked encoding from the Machine'); return }
      if (r >= 0 && r < chunk.length) this.reusable = false
      const out = parts.length === 1 ? parts[0] : Buffer.concat(parts)
      if (out.length > 0 && !this.client.write(out)) this.owner.pauseUpstream()
    } else {
      const n = this.bodyBytesIn(chunk, start)
      if (n < 0) return
      if (n > 0 && !this.client.write(start === 0 && n === chunk.length ? chunk : chunk.subarray(start, start + n))) this.owner.pauseUpstream()
      if (start + n < chunk.length) this.reusable = false // bytes after the response: framing is off
    }
    if (this.complete) this.owner.responseComplete()
  }

  // ---- fly-replay: the response is a routing decision, never an answer ----

  private hold(res: ResponseHead, rest: Buffer | undefined): void {
    this.res = res
    this.held = HELD_READING
    this.reusable = res.keepAlive && this.owner.requestDone
    this.left = res.bodyKind === BODY_LENGTH ? res.contentLength : 0
    if (res.bodyKind === BODY_CHUNKED) this.chunks.reset()
    this.heldParts = []
    this.heldBytes = 0
    if (rest !== undefined && res.bodyKind !== BODY_NONE) { this.holdBody(rest); return }
    if (rest !== undefined) this.reusable = false // bytes after a bodyless response
    this.checkHeld()
  }

  /** Reads held body bytes: collected for the JSON form, counted (to keep the connection in step) otherwise. */
  private holdBody(chunk: Buffer): void {
    const res = this.res!
    let n: number
    if (res.bodyKind === BODY_CHUNKED) {
      const r = this.chunks.scan(chunk, 0, chunk.length, res.replayJson ? this.collect : undefined)
      if (r === CHUNKED_ERROR) { this.reusable = false; this.owner.responseInvalid('invalid chunked encoding in a fly-replay response'); return }
      n = r === CHUNKED_MORE ? chunk.length : r
    } else {
      n = this.bodyBytesIn(chunk, 0)
      if (res.replayJson && n > 0) this.collect(chunk, 0, n)
    }
    if (n < chunk.length) this.reusable = false
    this.checkHeld()
  }

  /** Hands the held response on once it is read (JSON form), or at once when its body is not needed. */
  private checkHeld(): void {
    if (this.complete) { this.releaseHeld(true); return }
    if (!this.res!.replayJson || this.heldBytes > MAX_DIRECTIVE_BYTES) {
      this.reusable = false // the rest is not read: the connection is out of step
      this.releaseHeld(false)
    }
  }

  private releaseHeld(whole: boolean): void {
    const res = this.res!
    const parts = this.heldParts
    this.heldParts = []
    this.held = HELD_DONE
    const body = !res.replayJson || !whole || this.heldBytes > MAX_DIRECTIVE_BYTES ? undefined
      : parts.length === 1 ? parts[0] : Buffer.concat(parts)
    this.owner.replayResponse(res, body)
  }

  private upgrade(res: ResponseHead, rest: Buffer | undefined): void {
    const head = clientResponseHead(this.req!, res, { dechunk: false, close: false }, {
      requestId: this.reqId, serverHeader: this.serverHeader, edits: this.edits, via: '1.1',
    })
    this.started = true
    this.reusable = false
    // the Machine's Upgrade line is kept in res.lines; Connection was dropped as hop-by-hop
    this.client.write(`${head.slice(0, -2)}Connection: Upgrade\r\n\r\n`, 'latin1')
    if (rest !== undefined) this.client.write(rest)
    this.owner.upgraded()
  }
}
