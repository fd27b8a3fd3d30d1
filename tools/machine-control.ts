import type { CatalogWriter } from '../catalog/catalog-api.js'
import type { MachineStarter, MachineStopper } from '../proxy/index.js'

/**
 * The proxy's autostart and autostop requests as catalog control-plane writes (DESIGN §2: a Machine's
 * `desired` side). They work from any node: gossip carries them to the host, whose supervisor acts, and
 * the reason travels in the events (`autostart: request 01H…`, `autostop: excess=2`).
 */
export function catalogMachineStarter(catalog: Pick<CatalogWriter, 'setDesiredState'>): MachineStarter {
  return {
    async start(machineId, reason) {
      await catalog.setDesiredState(machineId, 'started', reason)
    },
  }
}

export function catalogMachineStopper(catalog: Pick<CatalogWriter, 'setDesiredState' | 'setCordoned'>): MachineStopper {
  return {
    async cordon(machineId, reason) {
      await catalog.setCordoned(machineId, true, reason)
    },
    async uncordon(machineId, reason) {
      await catalog.setCordoned(machineId, false, reason)
    },
    async stop(machineId, mode, reason) {
      // no signal of its own: the supervisor uses the app's kill_signal and kill_timeout (FLY-SPEC §5 step 4)
      await catalog.setDesiredState(machineId, mode, reason)
    },
  }
}
