import { closeSync } from 'node:fs'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { EdgeProxyError } from '../../schemas/errors.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { MachineLog } from '../logs/machine-log.js'
import { readMachineLogs } from '../logs/read-logs.js'
import { RotatingLog } from '../logs/rotating-log.js'
import { spawnMachineProcess, terminateProcess } from '../process-runner.js'

const ID = '0123456789abcd'
let dir: Awaited<ReturnType<typeof tempDir>>
beforeEach(async () => { dir = await tempDir('edgeproxy-logs-') })
afterEach(async () => { await dir.remove() })

const logsDir = (): string => join(dir.path, 'machines', ID, 'logs')

async function collect(iter: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = []
  for await (const line of iter) out.push(line)
  return out
}

test('the log rotates by size, keeps maxFiles old files, and never splits a line', async () => {
  const log = new RotatingLog(logsDir(), { maxBytes: 1024, maxFiles: 2 })
  await log.open()
  for (let i = 0; i < 100; i++) log.writeLine(`line ${String(i).padStart(3, '0')} ${'x'.repeat(40)}`) // 50 bytes each
  await log.close()

  const files = (await readdir(logsDir())).sort()
  expect(files).toEqual(['machine.log', 'machine.log.1', 'machine.log.2'])
  for (const f of files) {
    expect((await stat(join(logsDir(), f))).size).toBeLessThanOrEqual(1024)
    for (const line of (await readFile(join(logsDir(), f), 'utf8')).split('\n').filter(Boolean)) expect(line).toMatch(/^line \d{3} x{40}$/)
  }
  // what is kept is the newest, in order, ending with the last line written
  const lines = await collect(readMachineLogs(dir.path, ID))
  expect(lines.at(-1)).toMatch(/^line 099 /)
  const numbers = lines.map((l) => Number(l.slice(5, 8)))
  expect(numbers).toEqual(numbers.map((_, i) => numbers[0] + i))
  expect(numbers.length).toBeGreaterThan(40) // three files' worth
  expect(await collect(readMachineLogs(dir.path, ID, { tail: 3 }))).toEqual(lines.slice(-3))
})

test('follow yields lines as they are written, across a rotation, and ends when aborted', async () => {
  const log = new RotatingLog(logsDir(), { maxBytes: 1024, maxFiles: 1 })
  await log.open()
  log.writeLine('before follow')
  await log.flush()

  const ac = new AbortController()
  const seen: string[] = []
  const reading = (async () => {
    for await (const line of readMachineLogs(dir.path, ID, { follow: true, signal: ac.signal, pollMs: 50 })) {
      seen.push(line)
      if (line === 'last') ac.abort()
    }
  })()
  for (let i = 0; i < 40; i++) log.writeLine(`live ${i} ${'y'.repeat(40)}`) // ~2 KiB: rotates at least once
  log.writeLine('last')
  await log.flush()
  await reading // ends because of the abort, not because of a timeout: vitest would fail the test first

  expect(seen[0]).toBe('before follow')
  expect(seen.at(-1)).toBe('last')
  expect(seen.filter((l) => l.startsWith('live '))).toHaveLength(40)
  await log.close()
})

test('an aborted follow with nothing new ends at once', async () => {
  const log = new RotatingLog(logsDir())
  await log.open()
  log.writeLine('only line')
  await log.close()
  const ac = new AbortController()
  const lines: string[] = []
  let abortedAt = 0
  for await (const l of readMachineLogs(dir.path, ID, { follow: true, signal: ac.signal, pollMs: 10_000 })) {
    lines.push(l)
    // abort once the reader waits for more; the 10 s poll shows the abort itself ends the wait
    setTimeout(() => { abortedAt = Date.now(); ac.abort() }, 50)
  }
  expect(lines).toEqual(['only line'])
  expect(Date.now() - abortedAt).toBeLessThan(1000)
})

test('logs of an unknown Machine, or a bad id, are a clear error', async () => {
  await expect(collect(readMachineLogs(dir.path, 'fedcba98765432'))).rejects.toMatchObject({ code: 'EP_MACHINE_NOT_FOUND' })
  const bad = await collect(readMachineLogs(dir.path, '../../etc')).catch((e: unknown) => e)
  expect(bad).toBeInstanceOf(EdgeProxyError)
  expect(bad).toMatchObject({ code: 'EP_INVALID_REQUEST', path: 'id' })
})

test("a Machine's stdout and stderr reach its log through the FIFO, timestamped, with the supervisor's notes", async () => {
  const mlog = new MachineLog(join(dir.path, 'machines', ID))
  await mlog.open()
  const fd = mlog.machineFd()
  mlog.attach()
  const proc = await spawnMachineProcess({
    argv: [process.execPath, '-e', 'console.log("to stdout"); console.error("to stderr"); process.stdout.write("no newline at the end")'],
    env: {}, cwd: dir.path, stdioFd: fd,
  }).finally(() => closeSync(fd))
  await proc.exited
  await mlog.drain(2000)
  mlog.note('exited with code 0')
  await mlog.close()
  await terminateProcess(proc, { signal: 'SIGINT', timeoutMs: 100 })

  const lines = await collect(readMachineLogs(dir.path, ID))
  const text = lines.map((l) => l.replace(/^\d{4}-\d\d-\d\dT[\d:.]+Z /, ''))
  expect(lines.every((l) => /^\d{4}-\d\d-\d\dT[\d:.]+Z /.test(l))).toBe(true)
  expect(text).toEqual(['to stdout', 'to stderr', 'no newline at the end', '[edgeproxy] exited with code 0'])
})
