import type { AppConfig } from '../schemas/app-config.js'
import type { MachineRecord } from '../schemas/catalog-records.js'
import { EdgeProxyError } from '../schemas/errors.js'

/**
 * Splits a `[processes]` command line into argv the way a POSIX shell splits words (quotes and backslashes),
 * without running a shell: no globbing, no variables, no pipes. fly.toml writes process commands as one
 * string (`web = "node server.js --port 8080"`).
 */
export function splitCommandLine(line: string): string[] {
  const words: string[] = []
  let word = ''
  let inWord = false
  let quote: '"' | "'" | undefined
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]
    if (quote === "'") {
      if (ch === "'") quote = undefined
      else word += ch
      continue
    }
    if (quote === '"') {
      if (ch === '"') quote = undefined
      else if (ch === '\\' && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) word += line[++i]
      else word += ch
      continue
    }
    if (ch === "'" || ch === '"') { quote = ch; inWord = true; continue }
    if (ch === '\\' && i + 1 < line.length) { word += line[++i]; inWord = true; continue }
    if (ch === ' ' || ch === '\t' || ch === '\n') {
      if (inWord) words.push(word)
      word = ''
      inWord = false
      continue
    }
    word += ch
    inWord = true
  }
  if (quote !== undefined) throw new EdgeProxyError('EP_INVALID_CONFIG', `unterminated ${quote} quote in command "${line}"`, { path: 'processes' })
  if (inWord) words.push(word)
  return words
}

/**
 * The argv a Machine runs: its own spec.cmd, else its process group's command from `[processes]`, else the
 * app's `[experimental] cmd`. Spawned without a shell.
 */
export function resolveMachineCommand(machine: Pick<MachineRecord, 'id' | 'spec'>, config: AppConfig | undefined): string[] {
  if (machine.spec.cmd.length > 0) return machine.spec.cmd
  const groupCommand = config?.processes[machine.spec.processGroup]
  if (groupCommand !== undefined) {
    const argv = splitCommandLine(groupCommand)
    if (argv.length > 0) return argv
  }
  if (config?.cmd !== undefined && config.cmd.length > 0) return config.cmd
  throw new EdgeProxyError(
    'EP_MACHINE_SPAWN_FAILED',
    `Machine ${machine.id} has no command: give one with \`edgeproxy machines run --app APP -- CMD…\`, or set [processes] or [experimental] cmd in fly.toml`,
  )
}
