/**
 * Gossip: one libp2p peer per daemon that keeps every node's catalog converged (DESIGN §3) — broadcast of
 * local changes, anti-entropy sync that heals partitions, membership with heartbeats, and closeness (RTT).
 *
 * @example
 * import { gossipNode, readFleetKey, fleetKeyPath } from '../gossip/index.js'
 * const keyPath = fleetKeyPath({ fleet: opts.fleet, fleetKey: opts.fleetKey })
 * const gossip = gossipNode({
 *   listen: ['/ip4/0.0.0.0/tcp/4001'], bootstrap: opts.bootstrap, dataDir,
 *   fleetKey: keyPath === undefined ? undefined : await readFleetKey(keyPath),
 *   self: { region: 'ams', roles: ['edge', 'worker'], version },
 * })({ catalog, log: log.child({ component: 'gossip' }), load: () => proxy.load() })
 * await gossip.start()
 * proxy.useCloseness(gossip.closeness) // { rttToNode(node), regionsByRtt() }
 * await gossip.stop()
 */
export {
  gossipNode, type GossipCatalog, type GossipCloseness, type GossipNode, type GossipNodeComponents, type GossipNodeInit,
  type GossipTuning, type NodeStatus,
} from './gossip-node.js'
export { FLEET_KEY_FILE, fleetKeyFingerprint, fleetKeyPath, generateFleetKey, readFleetKey, writeFleetKey } from './fleet-key.js'
export { loadOrCreatePeerKey, peerKeyPath } from './peer-key.js'
export type { ClosenessView } from './closeness.js'
export type { LivenessState, NodeLiveness, NodeLoad, SelfDescription } from './membership.js'
export type { DropReason, GossipStats } from './stats.js'
export type { SyncSessionResult } from './sync-protocol.js'
export { CHANGES_TOPIC } from './broadcast.js'
export { HEARTBEAT_TOPIC } from './membership.js'
export { SYNC_PROTOCOL } from './anti-entropy.js'
