import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { BACKHAUL_LIMITS, type BackhaulOpen, BackhaulOpenSchema, type BackhaulRefusal, parseBackhaulJson } from '../../schemas/backhaul.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { ConnectFacts, MachineConnector } from '../machine-connector.js'
import { GRANT_AT } from './backhaul-stream.js'
import { FrameWriter } from './frame-writer.js'
import {
  controlFrame, Deframer, F_DATA, F_FIN, F_GOAWAY, F_OPEN, F_PING, F_PONG, F_RST, F_WINDOW, type FrameSink, F_OPEN_FAIL, F_OPEN_OK,
  MAX_DATA_FRAME, windowFrame,
} from './frames.js'
import type { BackhaulListenerStats } from './listener-stats.js'
import type { WorkerTargets } from './worker-targets.js'

const WINDOW = BACKHAUL_LIMITS.streamWindowBytes

export interface WorkerConnectionDeps {
  targets: WorkerTargets
  local: MachineConnector
  stats: BackhaulListenerStats
  log: Logger
  /** A stream connected to a local Machine (+1) or ended (-1): load other edges put on it (autostop reads it). */
  countLoad(machineId: string, delta: 1 | -1): void
}

/** One stream: an edge's connection to a Machine of this node. */
interface WorkerStream {
  readonly id: number
  readonly open: BackhaulOpen
  machine: Socket | undefined
  sendWindow: number
  recvWindow: number
  unacked: number
  /** The Machine's socket buffers past its high-water mark: grants wait for its drain. */
  writeBlocked: boolean
  /** Machine bytes waiting for window (the Machine socket is paused meanwhile). */
  parked: Buffer | undefined
  waitingDrain: boolean
  machineEnded: boolean
  machineClosed: boolean
  finSent: boolean
  finReceived: boolean
  edgeReset: boolean
  error: NodeJS.ErrnoException | undefined
  /** Counted in the Machine's forwarded load (from OPEN_OK until the stream is gone). */
  counted: boolean
}

/**
 * The worker's end of one edge's backhaul connection: each OPEN is checked (schema, then this node's
 * catalog: worker-targets.ts), stripped, and turned into a connection to the local Machine made exactly
 * as the edge would make it for a local Machine — the same connector, the PROXY header written from the
 * original client in the OPEN. Then bytes are relayed within the per-stream windows.
 */
export class WorkerConnection implements FrameSink {
  private readonly writer: FrameWriter
  private readonly deframer = new Deframer(this)
  private readonly streams = new Map<number, WorkerStream>()
  private lastOpenId = 0
  private draining = false
  private closed = false
  /** A frame arrived since the last idle sweep. */
  heard = true

  constructor(
    private readonly socket: TLSSocket,
    readonly peer: string,
    private readonly deps: WorkerConnectionDeps,
    private readonly onClosed: (conn: WorkerConnection) => void,
  ) {
    this.writer = new FrameWriter(socket)
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => { this.heard = true; this.deframer.feed(chunk) })
    socket.on('error', (err: NodeJS.ErrnoException) => this.close(`connection error (${err.code ?? err.message})`))
    socket.on('end', () => this.close('the edge closed the connection'))
    socket.on('close', () => this.close('closed'))
  }

  get streamCount(): number { return this.streams.size }

  /** No new streams (GOAWAY); the connection ends once the open ones have. */
  drain(): void {
    if (this.draining || this.closed) return
    this.draining = true
    this.writer.write(controlFrame(F_GOAWAY, 0))
    if (this.streams.size === 0) this.endGracefully()
  }

  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    this.deps.log.debug({ peer: this.peer, reason, streams: this.streams.size }, 'backhaul connection closed')
    for (const s of this.streams.values()) { s.edgeReset = true; s.machine?.destroy(); this.uncount(s) }
    this.streams.clear()
    this.writer.dropWaiters()
    this.socket.destroy()
    this.deps.stats.connectionsOpen--
    this.onClosed(this)
  }

  // ---- FrameSink ----

  onControl(type: number, id: number, payload: Buffer): void {
    switch (type) {
      case F_OPEN: this.onOpen(id, payload); return
      case F_FIN: {
        const s = this.streams.get(id)
        if (s === undefined || s.finReceived) return
        s.finReceived = true
        s.machine?.end()
        return
      }
      case F_RST: {
        const s = this.streams.get(id)
        if (s === undefined) return
        s.edgeReset = true
        this.streams.delete(id)
        s.machine?.destroy()
        this.uncount(s)
        this.afterStreamEnded()
        return
      }
      case F_WINDOW: {
        if (payload.length !== 4) { this.protocolError('WINDOW frame without a 4-byte increment'); return }
        const s = this.streams.get(id)
        if (s === undefined) return
        s.sendWindow += payload.readUInt32BE(0)
        if (s.parked !== undefined) {
          const parked = s.parked
          s.parked = undefined
          this.toEdge(s, parked)
        }
        this.maybeResume(s)
        this.maybeFinish(s)
        return
      }
      case F_PING: this.writer.write(controlFrame(F_PONG, 0, payload)); return
      case F_PONG: return
      case F_DATA: return // zero-length
      default: this.protocolError(`unexpected frame type ${type} from an edge`)
    }
  }

  onData(id: number, chunk: Buffer): void {
    const s = this.streams.get(id)
    if (s === undefined) return // reset a moment ago: its last bytes are dropped
    s.recvWindow -= chunk.length
    if (s.recvWindow < 0) { this.protocolError(`the edge sent more than the window of stream ${id}`); return }
    const m = s.machine
    if (m === undefined) { this.protocolError(`DATA on stream ${id} before OPEN_OK`); return }
    if (s.finReceived || m.destroyed) return
    s.unacked += chunk.length
    if (!m.write(chunk)) s.writeBlocked = true
    else this.grant(s)
  }

  onProtocolError(message: string): void {
    this.protocolError(message)
  }

  // ---- streams ----

  private onOpen(id: number, payload: Buffer): void {
    if (id <= this.lastOpenId || id % 2 === 0) { this.protocolError(`OPEN with stream id ${id} after ${this.lastOpenId}`); return }
    this.lastOpenId = id
    this.deps.stats.opens++
    if (this.draining) { this.refuse(id, { code: 'EP_SHUTTING_DOWN', message: 'this node is shutting down; retry elsewhere' }); return }
    if (this.streams.size >= BACKHAUL_LIMITS.streamsPerConnection) {
      this.refuse(id, { code: 'EP_CAPACITY', message: `more than ${BACKHAUL_LIMITS.streamsPerConnection} streams on one backhaul connection` })
      return
    }
    const open = parseBackhaulJson(BackhaulOpenSchema, payload, 'OPEN')
    if (typeof open === 'string') {
      this.deps.log.warn({ peer: this.peer, problem: open }, 'backhaul OPEN refused: malformed')
      this.refuse(id, { code: 'EP_BAD_REQUEST', message: open })
      return
    }
    const target = this.deps.targets.resolve(open)
    if (target instanceof EdgeProxyError) { this.refuse(id, { code: target.code, message: target.message }); return }
    const s: WorkerStream = {
      id, open, machine: undefined, sendWindow: WINDOW, recvWindow: WINDOW, unacked: 0, writeBlocked: false, parked: undefined,
      waitingDrain: false, machineEnded: false, machineClosed: false, finSent: false, finReceived: false, edgeReset: false, error: undefined,
      counted: false,
    }
    this.streams.set(id, s)
    const facts: ConnectFacts | undefined = open.client === undefined ? undefined : {
      client: { ...open.client, servername: open.client.servername },
      proxyProto: open.proxyProto,
      reqId: open.reqId,
    }
    this.deps.local.connect(target, open.port, (err, socket) => this.connected(s, err, socket), facts)
  }

  private connected(s: WorkerStream, err: EdgeProxyError | undefined, socket: Socket | undefined): void {
    if (s.edgeReset || this.closed) { socket?.destroy(); return } // the edge gave up meanwhile
    if (err !== undefined || socket === undefined) {
      this.streams.delete(s.id)
      const e = err ?? new EdgeProxyError('EP_MACHINE_UNREACHABLE', `Machine ${s.open.machine} is unreachable`)
      const errno = (e.cause as NodeJS.ErrnoException | undefined)?.code
      this.refuse(s.id, { code: e.code, message: e.message, ...(typeof errno === 'string' && /^E[A-Z0-9]{1,31}$/.test(errno) ? { errno } : {}) })
      this.afterStreamEnded()
      return
    }
    s.machine = socket
    socket.setNoDelay(true)
    this.deps.stats.streamsOpened++
    s.counted = true
    this.deps.countLoad(s.open.machine, 1)
    this.writer.write(controlFrame(F_OPEN_OK, s.id))
    socket.on('data', (chunk: Buffer) => this.toEdge(s, chunk))
    socket.on('drain', () => { s.writeBlocked = false; this.grant(s) })
    socket.on('end', () => { s.machineEnded = true; this.maybeFinish(s) })
    socket.on('error', (e: NodeJS.ErrnoException) => { s.error = e })
    socket.on('close', () => { s.machineClosed = true; this.maybeFinish(s) })
  }

  /** Machine bytes → DATA frames, as far as the window allows; the rest waits with the Machine paused. */
  private toEdge(s: WorkerStream, chunk: Buffer): void {
    let off = 0
    const len = chunk.length
    while (off < len) {
      if (s.sendWindow <= 0) {
        s.parked = off === 0 ? chunk : chunk.subarray(off)
        s.machine?.pause()
        return
      }
      const n = Math.min(len - off, s.sendWindow, MAX_DATA_FRAME)
      this.writer.data(s.id, off === 0 && n === len ? chunk : chunk.subarray(off, off + n))
      s.sendWindow -= n
      off += n
    }
    if (this.writer.congested && !s.waitingDrain) {
      s.waitingDrain = true
      s.machine?.pause()
      this.writer.afterDrain(() => { s.waitingDrain = false; this.maybeResume(s) })
    }
  }

  private maybeResume(s: WorkerStream): void {
    if (s.parked === undefined && !s.waitingDrain && !s.machineClosed) s.machine?.resume()
  }

  /** FIN after the last byte; when the Machine's socket has closed, the stream ends (RST tells why). */
  private maybeFinish(s: WorkerStream): void {
    if (s.edgeReset || this.streams.get(s.id) !== s) return
    if (s.parked !== undefined && s.error === undefined) return // the rest goes out first, as the window opens
    if (s.machineEnded && !s.finSent && s.error === undefined) {
      s.finSent = true
      this.writer.write(controlFrame(F_FIN, s.id))
    }
    if (!s.machineClosed) return
    this.streams.delete(s.id)
    this.uncount(s)
    if (s.error !== undefined) {
      const refusal: BackhaulRefusal = { code: 'EP_MACHINE_RESET', message: `Machine ${s.open.machine} reset the connection (${s.error.code ?? s.error.message})` }
      if (s.error.code !== undefined && /^E[A-Z0-9]{1,31}$/.test(s.error.code)) refusal.errno = s.error.code
      this.writer.write(controlFrame(F_RST, s.id, Buffer.from(JSON.stringify(refusal))))
    } else if (!(s.finSent && s.finReceived)) {
      this.writer.write(controlFrame(F_RST, s.id)) // the Machine closed its socket: no more bytes either way
    }
    this.afterStreamEnded()
  }

  private uncount(s: WorkerStream): void {
    if (!s.counted) return
    s.counted = false
    this.deps.countLoad(s.open.machine, -1)
  }

  private grant(s: WorkerStream): void {
    if (s.unacked < GRANT_AT || s.writeBlocked || s.edgeReset) return
    this.writer.write(windowFrame(s.id, s.unacked))
    s.recvWindow += s.unacked
    s.unacked = 0
  }

  private refuse(id: number, refusal: BackhaulRefusal): void {
    this.deps.stats.refused++
    this.writer.write(controlFrame(F_OPEN_FAIL, id, Buffer.from(JSON.stringify(refusal))))
  }

  private afterStreamEnded(): void {
    if (this.draining && this.streams.size === 0) this.endGracefully()
  }

  private endGracefully(): void {
    this.socket.end()
  }

  private protocolError(message: string): void {
    this.deps.stats.protocolErrors++
    this.deps.log.warn({ peer: this.peer, message }, 'backhaul protocol error; closing the connection')
    this.close(`protocol error: ${message}`)
  }
}
