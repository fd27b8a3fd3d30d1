import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { once } from 'node:events'
import { DAEMON_NODE_FLAGS } from '../../tools/node-flags.js'

export const ROOT = join(import.meta.dirname, '..', '..')
export const BIN = join(ROOT, 'bin', 'edgeproxy.js')

function assertBuilt(): void {
  if (!existsSync(join(ROOT, 'dist', 'tools', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` before the CLI tests (npm test does)')
}

export interface CliResult { code: number | null; stdout: string; stderr: string }

/** Runs `edgeproxy ARGS…` to completion (bounded by a timeout). */
export async function runCli(args: string[], options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  assertBuilt()
  const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd ?? ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  return { code, stdout, stderr }
}

export interface DaemonProcess {
  readonly child: ChildProcess
  /** host:port of its admin API. */
  readonly admin: string
  readonly api: string
  logs(): string
  /** SIGTERM and wait for a clean exit. */
  stop(): Promise<number | null>
  kill(): Promise<void>
}

/** Starts `edgeproxy <command> …` and resolves once its log says the node started. */
export async function startDaemonProcess(args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<DaemonProcess> {
  assertBuilt()
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, BIN, ...args], { cwd: options.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let admin: string | undefined
  const started = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start within ${options.timeoutMs ?? 20_000} ms:\n${out}`)), options.timeoutMs ?? 20_000)
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      for (const line of out.split('\n')) {
        if (!line.includes('"node started"')) continue
        try {
          admin = (JSON.parse(line) as { admin: string }).admin
          clearTimeout(timer)
          resolve(admin)
        } catch { /* partial line: wait for the rest */ }
      }
    })
    child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`daemon exited with ${code} before starting:\n${out}`))
    })
  })
  const addr = await started
  let exited: Promise<number | null> | undefined
  const exit = (): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
    exited ??= once(child, 'exit').then(([code]) => code as number | null)
    return exited
  }
  return {
    child,
    admin: addr,
    api: `http://${addr}`,
    logs: () => out,
    async stop() {
      const done = exit()
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      const code = await done
      clearTimeout(timer)
      return code
    },
    async kill() {
      const done = exit()
      child.kill('SIGKILL')
      await done
    },
  }
}
