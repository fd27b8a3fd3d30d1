import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The argv that runs the demo app (tools/demo-app.ts) as a Machine: `node dist/tools/demo-app.js` from a
 * build, or `node --import tsx tools/demo-app.ts` when edgeproxy itself runs from source (tests, `tsx`).
 * Absolute paths, so the Machine's working directory does not matter.
 */
export function demoAppCommand(): string[] {
  const here = fileURLToPath(import.meta.url)
  const root = dirname(dirname(here))
  if (here.endsWith('.ts')) {
    const tsxLoader = createRequire(import.meta.url).resolve('tsx')
    return [process.execPath, '--import', tsxLoader, join(root, 'tools', 'demo-app.ts')]
  }
  return [process.execPath, join(root, 'tools', 'demo-app.js')]
}
