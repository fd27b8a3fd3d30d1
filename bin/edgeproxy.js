#!/usr/bin/env -S node --max-semi-space-size=32 --interrupt-budget=540672
// The flags are tools/node-flags.ts's DAEMON_NODE_FLAGS (a test checks that the two agree).
// The polyfill must load before anything that can import libp2p (Node 20 lacks Promise.withResolvers).
import { existsSync } from 'node:fs'

const entry = new URL('../dist/tools/cli/main.js', import.meta.url)
if (!existsSync(entry)) {
  process.stderr.write('error: edgeproxy is not built; run `npm ci` (or `npm run build`) in the edgeproxy folder first\n')
  process.exit(1)
}
await import('../dist/tools/polyfills.js')
const { main } = await import(entry.href)
await main(process.argv)
