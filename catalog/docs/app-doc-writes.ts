import type { AppConfig } from '../../schemas/app-config.js'
import type { CheckStatus, DesiredState, MachineSpec, MachineState } from '../../schemas/catalog-records.js'
import { json, readNum, str } from './automerge-values.js'

/**
 * Writes into an app document, applied inside Automerge.change. Inputs are validated before these run,
 * so a write never leaves a half-valid document behind. Writers stay on their own side of each Machine
 * (see app-doc.ts).
 */
type Draft = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

export function writeAppDeploy(d: Draft, config: AppConfig, hostnames: string[], at: number): void {
  const app = d.app as Draft
  app.config = json(config)
  app.hostnames = json(hostnames)
  app.version = (readNum(app.version) ?? 0) + 1
  if (readNum(app.createdAt) === undefined || app.removed === true) app.createdAt = at
  app.updatedAt = at
  app.removed = false
}

export function writeAppRemoved(d: Draft, at: number): void {
  d.app.removed = true
  d.app.updatedAt = at
}

export function writeFlycast(d: Draft, address: string, at: number): void {
  d.app.flycast = str(address)
  d.app.updatedAt = at
}

export interface NewMachine {
  id: string
  app: string
  region: string
  node: string
  spec: MachineSpec
  appVersion: number
  desired: DesiredState
  reason: string
}

export function writeMachineCreate(d: Draft, m: NewMachine, at: number): void {
  d.machines[m.id] = {
    meta: {
      id: str(m.id), app: str(m.app), region: str(m.region), node: str(m.node),
      spec: json(m.spec), appVersion: m.appVersion, createdAt: at,
    },
    desired: { state: str(m.desired), reason: str(m.reason), at, cordoned: false },
    observed: { state: str('created'), reason: str('created'), at },
    health: { checks: json({}), ready: false, at: 0 },
  }
}

export function writeDesired(d: Draft, id: string, desired: DesiredState, reason: string, at: number): void {
  const side = d.machines[id].desired as Draft
  side.state = str(desired)
  side.reason = str(reason)
  side.at = at
  // a Machine asked to start again serves traffic again
  if (desired === 'started') side.cordoned = false
}

export function writeCordoned(d: Draft, id: string, cordoned: boolean, reason: string, at: number): void {
  const side = d.machines[id].desired as Draft
  side.cordoned = cordoned
  side.reason = str(reason)
  side.at = at
}

export function writeObserved(d: Draft, id: string, state: MachineState, reason: string, privateAddr: string | undefined, at: number): void {
  const side = d.machines[id].observed as Draft
  side.state = str(state)
  side.reason = str(reason)
  side.at = at
  if (privateAddr !== undefined) side.privateAddr = str(privateAddr)
}

export function writeHealth(d: Draft, id: string, checks: Record<string, CheckStatus>, ready: boolean, at: number): void {
  const side = d.machines[id].health as Draft
  side.checks = json(checks)
  side.ready = ready
  side.at = at
}

export function deleteMachine(d: Draft, id: string): void {
  delete d.machines[id]
}
