import { createInterface } from 'node:readline'
import pino from 'pino'
import { openCatalog } from '../../catalog/index.js'
import type { DesiredState } from '../../schemas/catalog-records.js'
import { machineSupervisor } from '../supervisor.js'
import { FAST, NODE } from './harness.js'

/**
 * A daemon stand-in for the adoption test: a catalog and a supervisor in their own process, which the test
 * SIGKILLs to leave Machines running behind. Prints one JSON line per Machine change; takes
 * `{"id","desired","reason"}` lines on stdin.
 *   node --import tsx machines/test/supervisor-host.ts DATA_DIR MACHINE_RANGE
 */
const [dataDir, machineRange] = process.argv.slice(2)
const catalog = await openCatalog({ dataDir, nodeName: NODE })
const supervisor = machineSupervisor({ dataDir, machineRange, ...FAST })({ catalog, log: pino({ level: 'silent' }) })
const print = (value: unknown): void => { process.stdout.write(`${JSON.stringify(value)}\n`) }

catalog.subscribe({}, (e) => {
  if (e.type !== 'machine.state' && e.type !== 'health.changed') return
  const m = catalog.getMachine(e.machineId)
  const pid = supervisor.processes().find((p) => p.machineId === e.machineId)?.pid
  if (m !== undefined) print({ id: m.id, state: m.state, ready: m.ready, pid })
})
await supervisor.start()
print({ started: true })

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { id: string; desired: DesiredState; reason: string }
  await catalog.setDesiredState(cmd.id, cmd.desired, cmd.reason)
}
