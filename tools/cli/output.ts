import Table from 'cli-table3'
import { EdgeProxyError } from '../../schemas/errors.js'

/** Tables for people, `--json` for scripts: every listing command goes through here. */
export function printTable(rows: Array<Record<string, unknown>>, columns: string[], json: boolean, raw: unknown = rows): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(raw, null, 2)}\n`)
    return
  }
  if (rows.length === 0) {
    process.stdout.write('(none)\n')
    return
  }
  const table = new Table({ head: columns.map((c) => c.toUpperCase()), style: { head: [], border: [] }, chars: { top: '', 'top-mid': '', 'top-left': '', 'top-right': '', bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '', left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ' } })
  for (const r of rows) table.push(columns.map((c) => format(r[c])))
  process.stdout.write(`${table.toString().split('\n').map((l) => l.trimEnd().replace(/^ /, '')).join('\n')}\n`)
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
}

function format(v: unknown): string {
  if (v === undefined || v === null) return '-'
  if (Array.isArray(v)) return v.join(',')
  if (typeof v === 'object') return JSON.stringify(v)
  return String(v)
}

export function ago(ms: number | undefined, now = Date.now()): string {
  if (ms === undefined || ms === 0) return '-'
  const s = Math.max(0, Math.round((now - ms) / 1000))
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.round(s / 60)}m ago`
  return `${Math.round(s / 3600)}h ago`
}

/** One line a person can act on, and a non-zero exit code. */
export function fail(err: unknown): never {
  const e = err instanceof EdgeProxyError ? err : EdgeProxyError.from(err)
  const message = e.code === 'EP_INTERNAL' && !(err instanceof EdgeProxyError) ? `${(err as Error).message}` : e.message
  process.stderr.write(`error: ${message}${e.code === 'EP_INTERNAL' ? '' : ` [${e.code}]`}\n`)
  process.exit(e.status === 400 ? 2 : 1)
}
