import { parse as parseToml } from 'smol-toml'
import type { z } from 'zod'
import { type AppConfig, FlyTomlSchema, IGNORED_SECTIONS } from './app-config.js'
import { EdgeProxyError } from './errors.js'
import { lineOf, tomlLineIndex } from './toml-lines.js'

export interface ParseAppConfigOptions {
  /** Shown in messages: `fly.toml`, a path, or `request body`. */
  file?: string
  /** Unknown keys become errors instead of warnings (`fly config validate --strict`). */
  strict?: boolean
}

export interface ParsedAppConfig {
  config: AppConfig
  /** Unknown or ignored keys, one line each, with the file and line where known. */
  warnings: string[]
}

/** `services[0].concurrency.hard_limit`: the form users see in flyctl and in our messages. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = ''
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`
  return out === '' ? '(root)' : out
}

function readDocument(text: string, file: string): { raw: unknown; lines: Map<string, number> | undefined } {
  const trimmed = text.trimStart()
  if (trimmed.startsWith('{')) {
    try {
      return { raw: JSON.parse(text), lines: undefined }
    } catch (err) {
      throw new EdgeProxyError('EP_INVALID_CONFIG', `${file}: not valid JSON: ${(err as Error).message}`, { cause: err })
    }
  }
  try {
    return { raw: parseToml(text), lines: tomlLineIndex(text) }
  } catch (err) {
    const e = err as { line?: number; message: string }
    const first = e.message.split('\n')[0].replace(/^Invalid TOML document: /, '')
    const where = e.line === undefined ? '' : ` (line ${e.line})`
    throw new EdgeProxyError('EP_INVALID_CONFIG', `${file}: not valid TOML: ${first}${where}`, { cause: err })
  }
}

function cleanMessage(issue: z.core.$ZodIssue): string {
  return issue.message.replace(/^Invalid input: /, '').replace(/, received /, ', got ')
}

function deleteAt(root: unknown, path: ReadonlyArray<PropertyKey>, key: string): void {
  let node = root as Record<PropertyKey, unknown> | undefined
  for (const p of path) node = node?.[p] as Record<PropertyKey, unknown> | undefined
  if (node !== undefined && typeof node === 'object') delete node[key]
}

/**
 * Parses fly.toml (TOML, or its JSON equivalent) into the normalized AppConfig. Unknown keys are dropped
 * with a warning each (flyctl ignores them); wrong types and bad values are rejected with every field
 * path and line in one message.
 */
export function parseAppConfigText(text: string, options: ParseAppConfigOptions = {}): ParsedAppConfig {
  const file = options.file ?? 'fly.toml'
  const { raw, lines } = readDocument(text, file)
  return parseAppConfigValue(raw, { ...options, file }, lines)
}

export function parseAppConfigValue(raw: unknown, options: ParseAppConfigOptions = {}, lines?: Map<string, number>): ParsedAppConfig {
  const file = options.file ?? 'fly.toml'
  const at = (path: ReadonlyArray<PropertyKey>): string => {
    const line = lines === undefined ? undefined : lineOf(lines, path)
    return line === undefined ? '' : ` (line ${line})`
  }
  const warnings: string[] = []
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
    for (const section of IGNORED_SECTIONS) {
      if (section in raw) warnings.push(`${file}: ${section}: accepted but not used by edgeproxy${at([section])}`)
    }
  }

  const first = FlyTomlSchema.safeParse(raw)
  if (first.success) return { config: first.data, warnings }

  const unknown = first.error.issues.filter((i) => i.code === 'unrecognized_keys')
  const errors = first.error.issues.filter((i) => i.code !== 'unrecognized_keys')
  const unknownLines = unknown.flatMap((i) =>
    (i as { keys: string[] }).keys.map((k) => `${file}: ${formatPath([...i.path, k])}: unknown key${at([...i.path, k])}`),
  )
  const errorLines = errors.map((i) => `${file}: ${formatPath(i.path)}: ${cleanMessage(i)}${at(i.path)}`)
  if (options.strict === true) errorLines.push(...unknownLines)
  if (errorLines.length > 0) {
    const firstPath = errors[0]?.path ?? unknown[0]?.path ?? []
    throw new EdgeProxyError('EP_INVALID_CONFIG', errorLines.join('\n'), { path: formatPath(firstPath) })
  }

  // Only unknown keys were wrong: drop them and parse again.
  const cleaned = structuredClone(raw)
  for (const issue of unknown) for (const key of (issue as { keys: string[] }).keys) deleteAt(cleaned, issue.path, key)
  const second = FlyTomlSchema.safeParse(cleaned)
  if (!second.success) {
    const lines2 = second.error.issues.map((i) => `${file}: ${formatPath(i.path)}: ${cleanMessage(i)}${at(i.path)}`)
    throw new EdgeProxyError('EP_INVALID_CONFIG', lines2.join('\n'), { path: formatPath(second.error.issues[0].path) })
  }
  return { config: second.data, warnings: [...warnings, ...unknownLines] }
}
