/**
 * Load that reaches this node's Machines without passing its Router: streams the backhaul's worker side
 * holds open to a local Machine for requests other edges routed (issue 7). Autostop adds it to the leases
 * it reads, so a Machine busy with remote traffic is neither judged idle nor stopped under it. A stream
 * counts like a connection, whatever the service's concurrency type: for type = "requests" an edge's idle
 * pooled connection counts too, which errs on the side of keeping the Machine.
 *
 * @example
 * // the worker side, per stream it connects to a local Machine
 * proxy.forwardedLoad.add(machineId, 1)   // Machine connection open
 * proxy.forwardedLoad.add(machineId, -1)  // stream ended
 */
export class ForwardedLoad {
  private readonly open = new Map<string, number>()

  add(machineId: string, delta: 1 | -1): void {
    const n = (this.open.get(machineId) ?? 0) + delta
    if (n <= 0) this.open.delete(machineId)
    else this.open.set(machineId, n)
  }

  of(machineId: string): number {
    return this.open.get(machineId) ?? 0
  }
}
