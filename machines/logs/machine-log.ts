import { join } from 'node:path'
import { ensureFifo, LogPipeReader, openFifoForMachine } from './log-pipe.js'
import { DEFAULT_LOG_ROTATION, type LogRotation, RotatingLog } from './rotating-log.js'

export const FIFO_FILE = 'stdio.fifo'
/** Lines the supervisor writes about a Machine carry this tag, so `machines logs` tells them from the app's. */
export const SUPERVISOR_TAG = '[edgeproxy]'

/**
 * One Machine's log: `<machineDir>/logs/machine.log` (+ rotated files). Each line is prefixed with an ISO
 * timestamp; the app's stdout and stderr arrive through the FIFO, the supervisor's own notes (started,
 * signalled, exited) through note().
 */
export class MachineLog {
  private readonly file: RotatingLog
  private reader: LogPipeReader | undefined
  readonly fifoPath: string

  constructor(machineDir: string, rotation: LogRotation = DEFAULT_LOG_ROTATION, onError: (err: unknown) => void = () => {}) {
    this.file = new RotatingLog(join(machineDir, 'logs'), rotation, onError)
    this.fifoPath = join(machineDir, FIFO_FILE)
  }

  async open(): Promise<void> {
    await this.file.open()
    await ensureFifo(this.fifoPath)
  }

  /** A descriptor to hand to the child as stdout/stderr; close it after spawn. */
  machineFd(): number {
    return openFifoForMachine(this.fifoPath)
  }

  /** Starts (or restarts) reading the FIFO. Call after the Machine holds its end. */
  attach(): LogPipeReader {
    this.reader?.close()
    let paused = false
    const reader = new LogPipeReader(this.fifoPath, {
      onLine: (line) => {
        if (!this.file.writeLine(`${new Date().toISOString()} ${line}`) && !paused) {
          paused = true
          reader.pause()
          this.file.onDrain(() => { paused = false; reader.resume() })
        }
      },
    })
    this.reader = reader
    return reader
  }

  /** The last lines the Machine printed, for error reasons. */
  recentOutput(): string[] {
    return this.reader?.recentOutput() ?? []
  }

  note(message: string): void {
    this.file.writeLine(`${new Date().toISOString()} ${SUPERVISOR_TAG} ${message}`)
  }

  /**
   * Waits (bounded) for the Machine's last output to arrive — every writer closed the FIFO — so that a crash
   * message is in the log before the supervisor's note about the exit.
   */
  async drain(timeoutMs: number): Promise<void> {
    const reader = this.reader
    if (reader === undefined) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([reader.ended, new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })])
    clearTimeout(timer)
  }

  detach(): void {
    this.reader?.close()
    this.reader = undefined
  }

  async flush(): Promise<void> {
    await this.file.flush()
  }

  async close(): Promise<void> {
    this.detach()
    await this.file.close()
  }
}
