import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'

export const LOG_FILE = 'machine.log'

export interface LogRotation {
  /** A file is rotated before it would grow past this many bytes. */
  maxBytes: number
  /** Rotated files kept besides the current one (`machine.log.1` is the newest). */
  maxFiles: number
}

export const DEFAULT_LOG_ROTATION: LogRotation = { maxBytes: 10 * 1024 * 1024, maxFiles: 3 }

/** Lines queued beyond this make write() ask the producer to pause (the Machine then blocks on its pipe). */
const HIGH_WATER_BYTES = 1024 * 1024

export function rotatedName(index: number): string {
  return index === 0 ? LOG_FILE : `${LOG_FILE}.${index}`
}

/**
 * An append-only log file with size rotation. Writes are queued and flushed by one async writer so that a
 * chatty Machine never blocks the daemon's event loop; rotation happens only between lines.
 */
export class RotatingLog {
  private fh: FileHandle | undefined
  private size = 0
  private pending: string[] = []
  private pendingBytes = 0
  private flushing: Promise<void> | undefined
  private drainWaiters: Array<() => void> = []
  private closed = false

  constructor(
    readonly dir: string,
    private readonly rotation: LogRotation = DEFAULT_LOG_ROTATION,
    /** A failed write (disk full, folder removed) drops the queued lines and is reported here. */
    private readonly onError: (err: unknown) => void = () => {},
  ) {
    if (!(rotation.maxBytes >= 1024)) throw new RangeError('log rotation maxBytes must be at least 1024')
    if (!Number.isInteger(rotation.maxFiles) || rotation.maxFiles < 0) throw new RangeError('log rotation maxFiles must be an integer ≥ 0')
  }

  async open(): Promise<void> {
    await this.reopen()
  }

  private async reopen(): Promise<void> {
    await mkdir(this.dir, { recursive: true })
    const fh = await open(join(this.dir, LOG_FILE), 'a')
    this.fh = fh
    this.size = (await fh.stat()).size
  }

  /** Queues one line (a newline is added). False means: pause until onDrain fires. */
  writeLine(line: string): boolean {
    if (this.closed) return true
    const text = `${line}\n`
    this.pending.push(text)
    this.pendingBytes += Buffer.byteLength(text)
    this.flushing ??= this.flushLoop()
    return this.pendingBytes < HIGH_WATER_BYTES
  }

  onDrain(listener: () => void): void {
    this.drainWaiters.push(listener)
  }

  /** Resolves once everything queued so far is on disk. */
  async flush(): Promise<void> {
    while (this.flushing !== undefined) await this.flushing
  }

  async close(): Promise<void> {
    if (this.closed) return
    await this.flush()
    this.closed = true
    await this.fh?.close()
    this.fh = undefined
  }

  private async flushLoop(): Promise<void> {
    try {
      while (this.pending.length > 0 && !this.closed) {
        if (this.fh === undefined) await this.reopen()
        let room = this.rotation.maxBytes - this.size
        const first = Buffer.byteLength(this.pending[0])
        if (first > room && this.size > 0) {
          await this.rotate()
          room = this.rotation.maxBytes
        }
        // take whole lines that fit (at least one, so an oversized line still gets written)
        let bytes = 0
        let count = 0
        while (count < this.pending.length) {
          const n = Buffer.byteLength(this.pending[count])
          if (count > 0 && bytes + n > room) break
          bytes += n
          count++
        }
        const chunk = this.pending.splice(0, count).join('')
        this.pendingBytes -= bytes
        await (this.fh as FileHandle).write(chunk)
        this.size += bytes
        if (this.pendingBytes < HIGH_WATER_BYTES / 2 && this.drainWaiters.length > 0) {
          const waiters = this.drainWaiters
          this.drainWaiters = []
          for (const w of waiters) w()
        }
      }
    } catch (err) {
      this.pending = []
      this.pendingBytes = 0
      this.onError(err)
    } finally {
      this.flushing = undefined
      const waiters = this.drainWaiters
      if (this.pendingBytes === 0 && waiters.length > 0) {
        this.drainWaiters = []
        for (const w of waiters) w()
      }
    }
  }

  private async rotate(): Promise<void> {
    await this.fh?.close()
    this.fh = undefined
    const { maxFiles } = this.rotation
    if (maxFiles === 0) {
      this.fh = await open(join(this.dir, LOG_FILE), 'w')
      this.size = 0
      return
    }
    await rm(join(this.dir, rotatedName(maxFiles)), { force: true })
    for (let i = maxFiles - 1; i >= 0; i--) {
      try {
        await rename(join(this.dir, rotatedName(i)), join(this.dir, rotatedName(i + 1)))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
    }
    this.fh = await open(join(this.dir, LOG_FILE), 'a')
    this.size = 0
  }
}
