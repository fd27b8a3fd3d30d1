#!/usr/bin/env node
import { existsSync } from 'node:fs'

const entry = new URL('../dist/bench/index.js', import.meta.url)
if (!existsSync(entry)) {
  process.stderr.write('error: benchmarks are not built; run `npm run build` first\n')
  process.exit(1)
}
await import(entry.href)
