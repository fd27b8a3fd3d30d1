/**
 * How the proxy asks for a Machine to change state. The proxy never writes the catalog itself (DESIGN §4:
 * it sees events and read-only views); tools/daemon.ts injects these, implemented with the catalog's
 * control-plane writes, which gossip carries to the node that hosts the Machine.
 *
 * @example
 * // tools/daemon.ts
 * const starter: MachineStarter = { start: async (id, reason) => { await catalog.setDesiredState(id, 'started', reason) } }
 */
export interface MachineStarter {
  /**
   * Asks the Machine's host to start it (or resume it when suspended). Resolves once the request is
   * recorded, not when the Machine runs: routing learns that from catalog events. `reason` travels in the
   * events (`autostart: request 01H…`).
   */
  start(machineId: string, reason: string): Promise<void>
}

export interface MachineStopper {
  /** The Machine takes no new traffic (the first step of an autostop, FLY-SPEC §5). */
  cordon(machineId: string, reason: string): Promise<void>
  /** Undoes cordon() when a drain is abandoned. */
  uncordon(machineId: string, reason: string): Promise<void>
  /** Asks the host to stop or suspend it; the supervisor applies kill_signal and kill_timeout. */
  stop(machineId: string, mode: 'stopped' | 'suspended', reason: string): Promise<void>
}
