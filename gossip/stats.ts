/**
 * Plain counters, read by `stats()` for the admin API's /metrics. Components increment their own fields;
 * nothing here allocates per message.
 */
export const DROP_REASONS = [
  /** Over the byte limit for its kind. */
  'oversize',
  /** Not CBOR. */
  'malformed',
  /** CBOR, but not the schema (missing field, wrong type, bad docId). */
  'wrong-type',
  /** The catalog refused the bytes as Automerge changes. */
  'invalid-changes',
  /** Valid bytes that made apply or diff throw: the catalog quarantined the document. */
  'poison',
  /** For a document already quarantined here. */
  'quarantined',
  /** The forwarding peer exceeded its message rate. */
  'throttled',
  /** The catalog failed for a local reason (closed, disk); not the sender's fault. */
  'apply-failed',
  /** A heartbeat carrying this node's own name from another peer. */
  'impostor',
] as const
export type DropReason = (typeof DROP_REASONS)[number]

export type DropCounts = Record<DropReason, number>

export interface GossipCounters {
  changesPublished: number
  /** Published while no peer was subscribed: left to anti-entropy. */
  changesPublishedToNobody: number
  /** Local changes over the broadcast limit: left to anti-entropy. */
  changesTooBigToBroadcast: number
  changesReceived: number
  changesApplied: number
  changesMissingDeps: number
  /** Received when the publisher had reached every peer this node would forward to: not forwarded. */
  changesNotForwarded: number
  /** Received, but nothing in them was new here: applied as a no-op and not forwarded. */
  changesAlreadyHeld: number
  /** Messages published with changes a sync brought (gossip/sync-relay.ts). */
  changesRelayed: number
  heartbeatsSent: number
  heartbeatsReceived: number
  heartbeatsNotForwarded: number
  /** Mesh peers left out of a forward (changes or heartbeats) because the publisher had sent them the message (gossip/reach.ts). */
  forwardsSpared: number
  droppedChanges: DropCounts
  droppedHeartbeats: DropCounts
  syncInitiated: number
  syncAnswered: number
  syncInSync: number
  syncFailed: number
  syncThrottled: number
  /** Sessions put off behind a running one with a peer likely in the same state (same digest hash, or away together). */
  syncDeferred: number
  syncProtocolErrors: number
  syncDocsConverged: number
  /** Of those, documents brought level by a push (the changes one side lacked, no Automerge rounds). */
  syncDocsPushed: number
  syncDocsFailed: number
  /** Documents a sync brought that were broadcast on to peers that may lack them (gossip/sync-relay.ts). */
  syncDocsRelayed: number
  /** Sessions that brought more than the relay limit: left to anti-entropy. */
  syncRelaysTooBig: number
  handshakeFailures: number
  dialFailures: number
  /** Times the redials of unreachable peers paused because one of many came back (a healed partition). */
  redialPauses: number
}

function zeroDrops(): DropCounts {
  return Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as DropCounts
}

export function newCounters(): GossipCounters {
  return {
    changesPublished: 0, changesPublishedToNobody: 0, changesTooBigToBroadcast: 0, changesReceived: 0,
    changesApplied: 0, changesMissingDeps: 0, changesNotForwarded: 0, changesAlreadyHeld: 0, changesRelayed: 0, heartbeatsSent: 0, heartbeatsReceived: 0, heartbeatsNotForwarded: 0, forwardsSpared: 0,
    droppedChanges: zeroDrops(), droppedHeartbeats: zeroDrops(),
    syncInitiated: 0, syncAnswered: 0, syncInSync: 0, syncFailed: 0, syncThrottled: 0, syncDeferred: 0, syncProtocolErrors: 0,
    syncDocsConverged: 0, syncDocsPushed: 0, syncDocsFailed: 0, syncDocsRelayed: 0, syncRelaysTooBig: 0, handshakeFailures: 0, dialFailures: 0, redialPauses: 0,
  }
}

export interface GossipStats extends GossipCounters {
  /** Connected libp2p peers, and connections to them (more than one per peer after simultaneous dials). */
  peers: number
  connections: number
  /** Peers in this node's gossipsub mesh for catalog changes. */
  meshPeers: number
  /** Nodes tracked by membership (self excluded) and how many of them are up. */
  nodes: number
  nodesUp: number
}

export function snapshotCounters(c: GossipCounters): GossipCounters {
  return { ...c, droppedChanges: { ...c.droppedChanges }, droppedHeartbeats: { ...c.droppedHeartbeats } }
}
