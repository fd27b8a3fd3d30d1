import type { CatalogReader } from '../../catalog/index.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import type { AdminApiComponents } from './components.js'

/**
 * Where a new Machine runs when the request does not say: a worker in the asked region (the app's primary
 * region, else this node's), the one running the fewest Machines.
 */
export function placeMachine(
  catalog: CatalogReader,
  self: AdminApiComponents['self'],
  app: { primary_region?: string },
  wanted: { region?: string; node?: string },
  isUp: (node: string) => boolean,
): { region: string; node: string } {
  if (wanted.node !== undefined) {
    const node = wanted.node === self.name ? { name: self.name, region: self.region, roles: self.roles } : catalog.getNode(wanted.node)
    if (node === undefined) throw new EdgeProxyError('EP_INVALID_REQUEST', `unknown node "${wanted.node}"; see \`edgeproxy catalog nodes\``, { path: 'node' })
    if (!node.roles.includes('worker')) throw new EdgeProxyError('EP_INVALID_REQUEST', `node "${wanted.node}" has no worker role and cannot run Machines`, { path: 'node' })
    return { region: wanted.region ?? node.region, node: node.name }
  }
  const region = wanted.region ?? app.primary_region ?? self.region
  const workers = catalog.listNodes().filter((n) => n.status === 'active' && n.region === region && n.roles.includes('worker') && isUp(n.name))
  if (self.region === region && self.roles.includes('worker') && !workers.some((n) => n.name === self.name)) {
    workers.push({ name: self.name } as (typeof workers)[number])
  }
  if (workers.length === 0) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', `no live worker node in region "${region}"; pick another region or start a worker there`, { path: 'region' })
  }
  const load = (name: string) => catalog.listMachines({ node: name }).filter((m) => m.desired !== 'destroyed').length
  workers.sort((a, b) => load(a.name) - load(b.name) || a.name.localeCompare(b.name))
  return { region, node: workers[0].name }
}
