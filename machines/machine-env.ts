import type { AppConfig, Service } from '../schemas/app-config.js'
import type { MachineRecord } from '../schemas/catalog-records.js'

/** PORT when the Machine's process group has no service (Fly's default internal_port). */
export const DEFAULT_INTERNAL_PORT = 8080

/**
 * Host variables a Machine inherits by default. A Fly VM sees nothing of its host; we pass only what a
 * process needs to find programs and behave (PATH is also how spawn finds a bare command name).
 */
export const DEFAULT_INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'] as const

/** Services that route to this Machine: those whose `processes` list its process group. */
export function servicesOfGroup(config: AppConfig | undefined, processGroup: string): Service[] {
  if (config === undefined) return []
  return config.services.filter((s) => s.processes.length === 0 || s.processes.includes(processGroup))
}

export function machinePort(config: AppConfig | undefined, processGroup: string): number {
  return servicesOfGroup(config, processGroup)[0]?.internal_port ?? DEFAULT_INTERNAL_PORT
}

export interface MachineEnvInput {
  machine: Pick<MachineRecord, 'id' | 'app' | 'region' | 'spec'>
  config: AppConfig | undefined
  privateAddr: string
  /** The daemon's own environment, from which `inherit` names are copied. */
  hostEnv?: NodeJS.ProcessEnv
  inherit?: readonly string[]
  /** The node's Flycast hosts file (machines/flycast-hosts.ts), given to the Machine as FLY_FLYCAST_HOSTS. */
  flycastHosts?: string
}

/**
 * fly.toml `[env]`, then the Machine's own env, then what the platform sets (which wins: the supervisor's
 * health checks and the proxy rely on PORT and FLY_PRIVATE_IP being true).
 */
export function buildMachineEnv(input: MachineEnvInput): Record<string, string> {
  const { machine, config, privateAddr } = input
  const env: Record<string, string> = {}
  const hostEnv = input.hostEnv ?? process.env
  for (const name of input.inherit ?? DEFAULT_INHERITED_ENV) {
    const value = hostEnv[name]
    if (value !== undefined) env[name] = value
  }
  Object.assign(env, config?.env ?? {}, machine.spec.env)
  env.PORT = String(machinePort(config, machine.spec.processGroup))
  env.FLY_APP_NAME = machine.app
  env.FLY_MACHINE_ID = machine.id
  env.FLY_REGION = machine.region
  env.FLY_PRIVATE_IP = privateAddr
  env.FLY_PROCESS_GROUP = machine.spec.processGroup
  if (config?.primary_region !== undefined) env.PRIMARY_REGION = config.primary_region
  if (input.flycastHosts !== undefined) env.FLY_FLYCAST_HOSTS = input.flycastHosts
  return env
}
