import { type FSWatcher, watch } from 'node:fs'
import { open, readdir, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { StringDecoder } from 'node:string_decoder'
import { EdgeProxyError } from '../../schemas/errors.js'
import { machineDir } from '../pid-files.js'
import { LOG_FILE } from './rotating-log.js'

export interface ReadMachineLogsOptions {
  /** Only the last N lines of what is already logged (default: everything kept). */
  tail?: number
  /** Keep yielding new lines as they are written, until `signal` aborts. */
  follow?: boolean
  /** Ends a follow (and any read) cleanly: the iteration just stops. */
  signal?: AbortSignal
  /** Fallback poll while following, in case a file-system event is missed (default 250 ms). */
  pollMs?: number
}

const ROTATED = /^machine\.log\.(\d+)$/
const READ_CHUNK = 64 * 1024

/**
 * Lines of a Machine's log on this node, oldest first, each as written (`<ISO time> <text>`). Serve it from
 * the admin API and the CLI (`edgeproxy machines logs ID [--follow] [--tail N]`). Logs live on the
 * Machine's host node only.
 *
 * @example
 * const ac = new AbortController()
 * for await (const line of readMachineLogs(dataDir, id, { follow: true, tail: 100, signal: ac.signal })) send(line)
 */
export async function* readMachineLogs(dataDir: string, machineId: string, options: ReadMachineLogsOptions = {}): AsyncGenerator<string> {
  const dir = join(machineDir(dataDir, machineId), 'logs')
  const signal = options.signal
  if (options.tail !== undefined && !(Number.isInteger(options.tail) && options.tail >= 0)) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', `tail must be a whole number ≥ 0, got ${options.tail}`, { path: 'tail' })
  }
  let current: FileHandle
  try {
    current = await open(join(dir, LOG_FILE), 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new EdgeProxyError('EP_MACHINE_NOT_FOUND', `no logs for Machine ${machineId} on this node; logs live on the Machine's host node (see \`edgeproxy machines ls\`)`)
    }
    throw err
  }
  try {
    const currentStat = await current.stat()
    const history = await readHistory(dir, current, currentStat.ino, currentStat.size, options.tail)
    for (const line of history.lines) {
      if (signal?.aborted) return
      yield line
    }
    if (options.follow !== true) {
      if (history.partial.length > 0) yield history.partial
      return
    }
    yield* follow(dir, current, currentStat.size, history.partial, options)
  } finally {
    await current.close().catch(() => {}) // may already be closed by follow() after a rotation
  }
}

interface History { lines: string[]; partial: string }

/** Rotated files (oldest first), then the current file up to `size`; stops early once `tail` lines are known. */
async function readHistory(dir: string, current: FileHandle, currentIno: number, size: number, tail: number | undefined): Promise<History> {
  const currentText = await readRange(current, 0, size)
  const nl = currentText.lastIndexOf('\n')
  const partial = currentText.slice(nl + 1)
  const chunks: string[][] = [splitLines(currentText.slice(0, nl + 1))]
  let count = chunks[0].length
  const rotated = (await readdir(dir))
    .map((n) => ROTATED.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b) // .1 is the newest
  for (const index of rotated) {
    if (tail !== undefined && count >= tail) break
    let fh: FileHandle
    try {
      fh = await open(join(dir, `${LOG_FILE}.${index}`), 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue // rotated away while we read
      throw err
    }
    try {
      const st = await fh.stat()
      if (st.ino === currentIno) continue // rotated since we opened it: its lines are already ours
      const lines = splitLines(await readRange(fh, 0, st.size))
      chunks.unshift(lines)
      count += lines.length
    } finally {
      await fh.close()
    }
  }
  const all = chunks.flat()
  return { lines: tail === undefined ? all : all.slice(Math.max(0, all.length - tail)), partial }
}

async function* follow(dir: string, first: FileHandle, from: number, partial: string, options: ReadMachineLogsOptions): AsyncGenerator<string> {
  const signal = options.signal
  let fh = first
  let pos = from
  let carry = partial
  let decoder = new StringDecoder('utf8')
  const wake = new Waker(dir, options.pollMs ?? 250, signal)
  try {
    while (!signal?.aborted) {
      // read what was appended
      for (;;) {
        const buf = Buffer.allocUnsafe(READ_CHUNK)
        const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, pos)
        if (bytesRead === 0) break
        pos += bytesRead
        const text = carry + decoder.write(buf.subarray(0, bytesRead))
        const nl = text.lastIndexOf('\n')
        carry = text.slice(nl + 1)
        for (const line of splitLines(text.slice(0, nl + 1))) {
          if (signal?.aborted) return
          yield line
        }
      }
      // rotated? the writer closed the old file before renaming it, so nothing more will arrive there
      const now = await stat(join(dir, LOG_FILE)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined
        throw err
      })
      if (now === undefined) {
        const dirGone = await stat(dir).then(() => false, () => true)
        if (dirGone) return // the Machine was destroyed
      } else if (now.ino !== (await fh.stat()).ino) {
        if (carry.length > 0) { yield carry; carry = '' }
        await fh.close()
        fh = await open(join(dir, LOG_FILE), 'r')
        pos = 0
        decoder = new StringDecoder('utf8')
        continue
      }
      await wake.next()
    }
  } finally {
    wake.close()
    if (fh !== first) await fh.close()
  }
}

/** Resolves on a change in the folder, after pollMs, or on abort — whichever comes first. */
class Waker {
  private watcher: FSWatcher | undefined
  private pending: (() => void) | undefined
  private fired = false

  constructor(dir: string, private readonly pollMs: number, private readonly signal: AbortSignal | undefined) {
    try {
      this.watcher = watch(dir, () => this.fire())
      this.watcher.on('error', () => this.closeWatcher()) // polling still covers us
    } catch {
      this.watcher = undefined // some file systems have no inotify: polling alone is slower but correct
    }
    signal?.addEventListener('abort', this.onAbort, { once: true })
  }

  next(): Promise<void> {
    if (this.fired || this.signal?.aborted) {
      this.fired = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.pending = undefined; resolve() }, this.pollMs)
      this.pending = () => { clearTimeout(timer); this.pending = undefined; resolve() }
    })
  }

  close(): void {
    this.closeWatcher()
    this.signal?.removeEventListener('abort', this.onAbort)
    this.pending?.()
  }

  private readonly onAbort = (): void => this.fire()

  private fire(): void {
    if (this.pending !== undefined) this.pending()
    else this.fired = true
  }

  private closeWatcher(): void {
    this.watcher?.close()
    this.watcher = undefined
  }
}

async function readRange(fh: FileHandle, start: number, end: number): Promise<string> {
  if (end <= start) return ''
  const buf = Buffer.allocUnsafe(end - start)
  let off = 0
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, start + off)
    if (bytesRead === 0) break
    off += bytesRead
  }
  return buf.subarray(0, off).toString('utf8')
}

/** Lines of text that ends with a newline (or is empty). */
function splitLines(text: string): string[] {
  if (text.length === 0) return []
  const lines = text.split('\n')
  lines.pop()
  return lines
}
