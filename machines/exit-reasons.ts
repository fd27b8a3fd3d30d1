import type { ExitInfo } from './process-runner.js'

/** `exited with code 1`, `was killed by SIGSEGV`: how a process ended, for reasons and the Machine log. */
export function describeExit(exit: ExitInfo | undefined): string {
  if (exit === undefined) return 'ended'
  if (exit.signal !== null) return `was killed by ${exit.signal}`
  if (exit.code !== null) return `exited with code ${exit.code}`
  return 'exited (status unknown: it was adopted from a previous daemon)'
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`
}

/** The last output lines, shortened, for a reason shown by `machines ls`. */
export function lastOutputNote(lines: string[], maxChars = 300): string {
  const text = lines.filter((l) => l.trim().length > 0).slice(-3).join(' | ')
  if (text.length === 0) return ''
  return `; last output: ${text.length > maxChars ? `…${text.slice(text.length - maxChars)}` : text}`
}
