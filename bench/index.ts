import '../tools/polyfills.js'
import { cpus, totalmem } from 'node:os'
import { catalogBench } from './catalog.js'

/**
 * `npm run bench [-- NAME…]`: runs the named benchmarks (default: all) and prints markdown for
 * docs/benchmarks.md, with the machine described.
 */
const SUITES: Record<string, () => Promise<string>> = {
  catalog: catalogBench,
}

const wanted = process.argv.slice(2)
const names = wanted.length === 0 ? Object.keys(SUITES) : wanted
const unknown = names.filter((n) => !(n in SUITES))
if (unknown.length > 0) {
  process.stderr.write(`error: unknown benchmark ${unknown.join(', ')}; choose from ${Object.keys(SUITES).join(', ')}\n`)
  process.exit(2)
}
process.stdout.write(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}\n\n`)
for (const name of names) {
  process.stderr.write(`running ${name}…\n`)
  process.stdout.write(`${await SUITES[name]()}\n`)
}
