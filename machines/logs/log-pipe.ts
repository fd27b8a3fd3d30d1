import { execFile } from 'node:child_process'
import { closeSync, constants, openSync } from 'node:fs'
import { lstat, rm } from 'node:fs/promises'
import { Socket } from 'node:net'
import { StringDecoder } from 'node:string_decoder'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)

/** A line longer than this is cut into pieces (a Machine printing megabytes without a newline). */
const MAX_LINE_CHARS = 16 * 1024

/**
 * A Machine's stdout and stderr go to a named pipe (FIFO) in its folder, not to a pipe owned by the daemon.
 * The Machine's end is opened read-write, so the pipe always has a reader: when the daemon dies the Machine
 * keeps running (its writes wait in the pipe's 64 KiB buffer rather than failing with EPIPE), and the next
 * daemon reopens the FIFO and carries on reading — the log survives adoption (issue 5, "no orphans").
 */
export async function ensureFifo(path: string): Promise<void> {
  try {
    const st = await lstat(path)
    if (st.isFIFO()) return
    await rm(path, { force: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  // Node has no mkfifo(3); coreutils' mkfifo is on every Linux we target
  await execFileAsync('mkfifo', ['-m', '600', path], { timeout: 5000 })
}

/** The descriptor a Machine gets as stdout and stderr. The caller closes it once the child has it. */
export function openFifoForMachine(path: string): number {
  return openSync(path, constants.O_RDWR)
}

export interface LogPipeReaderOptions {
  onLine: (line: string) => void
  /** Lines kept for error messages (`exited at once; last output: …`). */
  recentLines?: number
}

/**
 * Reads lines from a Machine's FIFO. `ended` resolves when every writer has closed it (the Machine and its
 * descendants are gone) or close() was called.
 */
export class LogPipeReader {
  readonly ended: Promise<void>
  private readonly socket: Socket
  private readonly decoder = new StringDecoder('utf8')
  private partial = ''
  private readonly recent: string[] = []
  private markEnded!: () => void

  constructor(fifoPath: string, private readonly options: LogPipeReaderOptions) {
    this.ended = new Promise((resolve) => { this.markEnded = resolve })
    // non-blocking: libuv polls the pipe like a socket instead of parking a threadpool thread per Machine
    const fd = openSync(fifoPath, constants.O_RDONLY | constants.O_NONBLOCK)
    try {
      this.socket = new Socket({ fd, readable: true, writable: false })
    } catch (err) {
      closeSync(fd)
      throw err
    }
    this.socket.on('data', (chunk: Buffer) => this.take(this.decoder.write(chunk)))
    this.socket.on('end', () => this.finish())
    this.socket.on('close', () => this.finish())
    this.socket.on('error', () => this.finish()) // a pipe error only ends this reader; the Machine is watched elsewhere
  }

  pause(): void { this.socket.pause() }
  resume(): void { this.socket.resume() }

  recentOutput(): string[] {
    return [...this.recent, ...(this.partial.length > 0 ? [this.partial] : [])]
  }

  /** Stops reading; what the Machine writes afterwards waits in the pipe for the next reader. */
  close(): void {
    this.socket.destroy()
    this.finish()
  }

  private take(text: string): void {
    if (text.length === 0) return
    let start = 0
    let data = this.partial + text
    this.partial = ''
    for (;;) {
      const nl = data.indexOf('\n', start)
      if (nl === -1) break
      this.emit(data.slice(start, nl > start && data.charCodeAt(nl - 1) === 13 ? nl - 1 : nl))
      start = nl + 1
    }
    data = data.slice(start)
    while (data.length > MAX_LINE_CHARS) {
      this.emit(data.slice(0, MAX_LINE_CHARS))
      data = data.slice(MAX_LINE_CHARS)
    }
    this.partial = data
  }

  private emit(line: string): void {
    const keep = this.options.recentLines ?? 10
    if (keep > 0) {
      this.recent.push(line)
      if (this.recent.length > keep) this.recent.shift()
    }
    this.options.onLine(line)
  }

  private finish(): void {
    const rest = this.decoder.end()
    if (rest.length > 0) this.take(rest)
    if (this.partial.length > 0) {
      const last = this.partial
      this.partial = ''
      this.emit(last)
    }
    this.markEnded()
  }
}
