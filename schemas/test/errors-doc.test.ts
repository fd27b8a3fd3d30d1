import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { expect, test } from 'vitest'
import { ERROR_TABLE } from '../errors.js'

test('docs/errors.md lists every error code with its status and Fly code', () => {
  const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'errors.md'), 'utf8')
  const missing = Object.entries(ERROR_TABLE).filter(([code, { status, fly }]) => {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${code}\` |`))
    return row === undefined || !row.includes(`| ${status} |`) || (fly !== undefined && !row.includes(fly))
  })
  expect(missing.map(([code]) => code)).toEqual([])
})
