/**
 * Machines: the worker's supervisor. It runs each Machine assigned to this node as a process with its own
 * loopback address, drives it toward the catalog's desired state, checks its health and readiness, and
 * reports observed state and health back to the catalog (DESIGN §5, issue 5).
 *
 * @example
 * const machines = machineSupervisor({ dataDir })({ catalog, log: log.child({ component: 'machines' }) })
 * await machines.start()
 * for await (const line of readMachineLogs(dataDir, id, { tail: 50 })) console.log(line)
 * await machines.stop() // before catalog.close()
 */
export { machineSupervisor, type MachineSupervisor, type MachineProcessInfo } from './supervisor.js'
export type { MachineSupervisorInit, MachineSupervisorComponents, SupervisorCatalog } from './supervisor-options.js'
export { readMachineLogs, type ReadMachineLogsOptions } from './logs/read-logs.js'
export { flycastHostsFile, flycastHostsPath, type FlycastHosts } from './flycast-hosts.js'
export { demoAppCommand } from './demo-app-command.js'
export { DEFAULT_MACHINE_RANGE, parseMachineRange } from './address-pool.js'
export { DEFAULT_CRASH_POLICY, type CrashPolicy } from './backoff.js'
export { DEFAULT_HEALTH_OPTIONS, type HealthOptions } from './health/machine-health.js'
export { DEFAULT_LOG_ROTATION, type LogRotation } from './logs/rotating-log.js'
export { parseKillSignal, parsePort, MachineStopBodySchema, type MachineStopBody } from '../schemas/machine-requests.js'
