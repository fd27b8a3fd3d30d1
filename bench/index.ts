import '../tools/polyfills.js'
import { spawn } from 'node:child_process'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { packageRoot } from '../tools/version.js'
import { catalogBench } from './catalog.js'
import { gossipBench } from './gossip.js'

/**
 * `npm run bench [-- NAME…]`: runs the named benchmarks (default: all) and prints markdown for
 * docs/benchmarks.md, with the machine described. Benchmarks that pin processes to cores run as their own
 * script so that this process stays out of their measurement.
 */
type Suite = { run: () => Promise<string> } | { script: string }

const SUITES: Record<string, Suite> = {
  catalog: { run: catalogBench },
  gossip: { run: gossipBench },
  machines: { script: 'machines-supervisor' },
  'proxy-http': { script: 'proxy-http' },
  'proxy-tls': { script: 'proxy-tls' },
  'proxy-tcp': { script: 'proxy-tcp' },
  autoscale: { script: 'autoscale' },
  backhaul: { script: 'backhaul' },
  // the Automerge warm-up: a node's first heal with and without it, and its cost at start
  'warm-up': { script: 'warm-up' },
  // 10 minutes of a two-node fleet (SOAK_MINUTES=1 for a quick check)
  soak: { script: 'soak' },
}

/** Scripts run built (`npm run bench` builds first), as deployed code runs, in the package root. */
function runScript(name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join('dist', 'bench', `${name}.js`)], { cwd: packageRoot(), stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.once('error', reject)
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`bench/${name}.ts exited with ${code}`))))
  })
}

const wanted = process.argv.slice(2)
const names = wanted.length === 0 ? Object.keys(SUITES) : wanted
const unknown = names.filter((n) => !(n in SUITES))
if (unknown.length > 0) {
  process.stderr.write(`error: unknown benchmark ${unknown.join(', ')}; choose from ${Object.keys(SUITES).join(', ')}\n`)
  process.exit(2)
}
process.stdout.write(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}\n\n`)
let failed = 0
for (const name of names) {
  process.stderr.write(`running ${name}…\n`)
  const suite = SUITES[name]
  try {
    process.stdout.write(`${'run' in suite ? await suite.run() : await runScript(suite.script)}\n`)
  } catch (err) {
    failed++
    process.stderr.write(`benchmark ${name} failed: ${(err as Error).message}\n`)
  }
}
process.exit(failed === 0 ? 0 : 1)
