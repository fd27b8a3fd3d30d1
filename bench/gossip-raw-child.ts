import '../tools/polyfills.js'
import { createHash } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { multiaddr } from '@multiformats/multiaddr'
import { CHANGES_TOPIC, readFleetKey } from '../gossip/index.js'
import { partOptions } from '../gossip/gossip-options.js'
import { HandshakeWatch } from '../gossip/handshake-watch.js'
import { createGossipLibp2p } from '../gossip/libp2p-node.js'
import type { FromChild, GossipChildConfig, ToChild } from './gossip-child.js'

/**
 * The gossip benchmark's baseline node (issue 11): the libp2p node and gossipsub settings of a daemon (same
 * transport stack, fleet key, mesh degree, scoring, RPC limit, all from `partOptions`) with nothing on top —
 * no catalog, no anti-entropy, no membership heartbeats, no closeness pings, no peer dialer. A `write` publishes
 * one payload the size of one of our changes messages on the changes topic; every receipt is reported `seen`.
 * It speaks gossip-child.ts's IPC protocol; peers come from the parent's `dial` (every earlier node).
 */
export interface RawChildConfig extends GossipChildConfig {
  /** Bytes of one published message: what our changes message for one app deploy weighs. */
  payloadBytes: number
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as RawChildConfig
const send = (m: FromChild): void => { process.send?.(m) }
const options = partOptions({
  listen: [`/ip4/${cfg.ip}/tcp/0`],
  bootstrap: [],
  dataDir: cfg.dataDir,
  self: { region: 'ams', roles: ['edge', 'worker'], version: 'bench-raw' },
  ipColocationFactorWeight: 0, // as gossip-child.ts: every node shares the loopback IP range
  ...(process.env.BENCH_GOSSIP_MESH === undefined ? {} : { tuning: { meshDegree: Number(process.env.BENCH_GOSSIP_MESH) } }),
}).libp2p
const libp2p = await createGossipLibp2p({
  ...options,
  privateKey: await generateKeyPair('Ed25519'),
  fleetKey: await readFleetKey(cfg.fleetKeyPath),
  handshakes: new HandshakeWatch(() => {}),
  topics: [CHANGES_TOPIC],
})
await libp2p.start()
const pubsub = libp2p.services.pubsub
pubsub.subscribe(CHANGES_TOPIC)

/** Apps written here or received: the `digest` is their hash, equal on every node once all have arrived. */
const known = new Set<string>()
const counters = { published: 0, publishedToNobody: 0, received: 0, publishFailed: 0, dialFailed: 0 }

// The payload starts with the app name (unique, so gossipsub's content-derived message id is too), then padding.
const payloadFor = (app: string): Uint8Array => {
  const bytes = new Uint8Array(Math.max(cfg.payloadBytes, app.length + 1)).fill(0x61)
  bytes.set(Buffer.from(`${app}\n`))
  return bytes
}
const appOf = (data: Uint8Array): string => Buffer.from(data.subarray(0, Math.max(0, data.indexOf(0x0a)))).toString()

// The topic runs with async validation (ours applies before forwarding); the bare node accepts at once.
pubsub.addEventListener('gossipsub:message', (evt) => {
  const { msg, msgId, propagationSource } = evt.detail
  if (msg.topic !== CHANGES_TOPIC) return
  pubsub.reportMessageValidationResult(msgId, propagationSource.toString(), TopicValidatorResult.Accept)
  counters.received++
  const app = appOf(msg.data)
  if (known.has(app)) return
  known.add(app)
  send({ type: 'seen', app, t: Date.now() })
})

process.on('message', (m: ToChild) => {
  void handle(m).catch((err: unknown) => { process.stderr.write(`${cfg.name}: ${m.type} failed: ${String(err)}\n`) })
})
// the parent is gone (crashed, killed): do not linger
process.on('disconnect', () => { void Promise.resolve(libp2p.stop()).finally(() => process.exit(1)) })

async function handle(m: ToChild): Promise<void> {
  switch (m.type) {
    case 'write': {
      const t = Date.now()
      send({ type: 'wrote', app: m.app, t })
      known.add(m.app)
      send({ type: 'seen', app: m.app, t: Date.now() })
      try {
        const r = await pubsub.publish(CHANGES_TOPIC, payloadFor(m.app))
        counters.published++
        if (r.recipients.length === 0) counters.publishedToNobody++
      } catch (err) {
        counters.publishFailed++
        throw err
      }
      break
    }
    case 'dial':
      await Promise.all(m.addrs.map(async (a) => {
        try {
          await libp2p.dial(multiaddr(a), { signal: AbortSignal.timeout(options.dialTimeoutMs) })
        } catch (err) {
          counters.dialFailed++
          process.stderr.write(`${cfg.name}: dialling ${a} failed: ${String(err)}\n`)
        }
      }))
      break
    case 'digest':
      send({ type: 'digest', id: m.id, hash: createHash('sha256').update([...known].sort().join('\n')).digest('hex') })
      break
    case 'stats': {
      const cpu = process.cpuUsage()
      const mem = process.memoryUsage()
      const peers = libp2p.getPeers().length
      send({
        type: 'stats', id: m.id, rss: mem.rss, heapUsed: mem.heapUsed, cpuMs: (cpu.user + cpu.system) / 1000,
        peers, meshPeers: pubsub.getMeshPeers(CHANGES_TOPIC).length, nodesUp: peers + 1, gossip: { ...counters, connections: libp2p.getConnections().length },
      })
      break
    }
    case 'stop':
      await libp2p.stop()
      process.exit(0)
  }
}

const listen = libp2p.getMultiaddrs().map((a) => a.toString())
send({ type: 'ready', peerId: libp2p.peerId.toString(), listen, addrs: listen })
