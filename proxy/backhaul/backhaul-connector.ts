import { isIP } from 'node:net'
import type { BackhaulOpen } from '../../schemas/backhaul.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { MachineConnector } from '../machine-connector.js'
import type { BackhaulClient } from './backhaul-client.js'

export interface BackhaulConnectorInit {
  /** This node: its own Machines are reached directly, never over the backhaul. */
  self: { node: string; region: string }
  /** How this node reaches its own Machines (directConnector). */
  local: MachineConnector
  client: BackhaulClient
  /** node → backhaul host:port (node-directory.ts). */
  directory: { backhaulOf(node: string): string | undefined }
}

/**
 * The proxy's connect phase across the fleet (issue 7): a Machine on this node is dialled directly; one on
 * another node is reached over that node's backhaul, with the Machine and the original client named in
 * the stream's OPEN so the worker connects exactly as a direct connect would (PROXY header included).
 */
export function backhaulConnector(init: BackhaulConnectorInit): MachineConnector {
  const { self, local, client, directory } = init
  const edge = { node: self.node, region: self.region }
  return {
    connect(machine, port, done, facts) {
      if (machine.node === self.node) { local.connect(machine, port, done, facts); return }
      const addr = directory.backhaulOf(machine.node)
      if (addr === undefined) {
        done(new EdgeProxyError('EP_BACKHAUL_UNREACHABLE', `Machine ${machine.id} runs on node ${machine.node}, which publishes no backhaul address; start that worker with the fleet CA (--fleet DIR) and --backhaul-listen`), undefined)
        return
      }
      const open: BackhaulOpen = { v: 1, machine: machine.id, port, edge }
      if (facts !== undefined) {
        const c = facts.client
        if (isIP(c.ip) === 0 || isIP(c.localAddress) === 0) {
          done(new EdgeProxyError('EP_BAD_REQUEST', 'the client connection closed before its Machine was reached'), undefined)
          return
        }
        open.client = { ip: c.ip, port: c.port, localAddress: c.localAddress, localPort: c.localPort, tls: c.tls, servername: c.servername }
        if (facts.proxyProto !== undefined) open.proxyProto = facts.proxyProto
        if (facts.reqId !== undefined) open.reqId = facts.reqId
      }
      client.open(machine.node, addr, open, (err, stream) => done(err, stream as unknown as Parameters<typeof done>[1]))
    },
  }
}
