import type { RequestHead } from '../http/request-head.js'
import type { ReplayDirective } from './replay-directive.js'

type Transform = NonNullable<ReplayDirective['transform']>

/**
 * The JSON form's `transform` (FLY-SPEC §6): a new path and query, headers deleted, headers set (a set
 * replaces every line of that name). Names and values were validated with the directive; framing headers
 * cannot be named, so the body stays framed as the client sent it.
 */
export function transformRequest(req: RequestHead, t: Transform): RequestHead {
  const drop = new Set<string>()
  for (const name of t.delete_headers) drop.add(name.toLowerCase())
  for (const h of t.set_headers) drop.add(h.name.toLowerCase())
  let lines = req.lines
  if (drop.size > 0) {
    lines = ''
    for (const line of req.lines.split('\r\n')) {
      if (line === '') continue
      if (!drop.has(line.slice(0, line.indexOf(':')).trim().toLowerCase())) lines += `${line}\r\n`
    }
  }
  for (const h of t.set_headers) lines += `${h.name}: ${h.value}\r\n`
  return { ...req, target: t.path ?? req.target, lines }
}

/** The same transform on an HTTP/2 request's path and lower-case header pairs. */
export function transformPairs(path: string, headers: Array<[string, string]>, t: Transform): { path: string; headers: Array<[string, string]> } {
  const drop = new Set<string>()
  for (const name of t.delete_headers) drop.add(name.toLowerCase())
  for (const h of t.set_headers) drop.add(h.name.toLowerCase())
  const out = headers.filter(([name]) => !drop.has(name))
  for (const h of t.set_headers) out.push([h.name.toLowerCase(), h.value])
  return { path: t.path ?? path, headers: out }
}
