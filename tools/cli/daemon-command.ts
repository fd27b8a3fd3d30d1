import type { Command } from 'commander'
import { rootLogger } from '../logger.js'
import { type Daemon, type DaemonOptions, startDaemon } from '../daemon.js'
import { DEMO_APP, ensureDemoApp } from '../dev-demo.js'
import { fail } from './output.js'
import { collect, parseHostPort, parsePortMap, parseRegion, parseRoles } from './options.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { DEFAULT_FLYCAST_RANGE, parseFlycastRange } from '../../schemas/flycast.js'
import { FlycastAllocator } from '../admin-api/flycast-allocator.js'
import { DEV_PORT_MAP, MIN_AUTOSTOP_INTERVAL_MS } from '../../proxy/index.js'

interface DaemonFlags {
  dataDir: string
  name: string
  region: string
  roles: string
  admin: string
  adminTokenFile?: string
  logLevel?: string
  fsync: boolean
  warmUp: boolean
  publicAddr?: string
  portMap?: string
  domain?: string
  gossipListen?: string[]
  bootstrap?: string[]
  fleet?: string
  fleetKey?: string
  heartbeatMs?: string
  downAfterMs?: string
  syncIntervalMs?: string
  autostopIntervalMs?: string
  wakeTimeoutMs?: string
  flycastRange?: string
  flycastPortMap?: string
  replayBodyLimit?: string
  requestBodyLimit?: string
  requestLogSample?: string
  machineRange?: string
  backhaulListen?: string
  backhaulAnnounce?: string
  nodeCert?: string
  nodeKey?: string
  gossipAnnounce?: string[]
  gossipDialFrom?: string
}

/** `--backhaul-*`, `--node-cert`, `--node-key` (issue 7, docs/backhaul.md). */
function backhaulOptions(flags: DaemonFlags): DaemonOptions['backhaul'] {
  if (flags.backhaulAnnounce !== undefined) parseHostPort(flags.backhaulAnnounce, '--backhaul-announce')
  return {
    listen: flags.backhaulListen === undefined ? undefined : parseHostPort(flags.backhaulListen, '--backhaul-listen'),
    announce: flags.backhaulAnnounce,
    certFile: flags.nodeCert,
    keyFile: flags.nodeKey,
  }
}

function flagPortMap(value: string | undefined, flag: string): Record<number, number> | undefined {
  if (value === undefined) return undefined
  try {
    return parsePortMap(value)
  } catch (err) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', (err as Error).message.replace('--port-map', flag))
  }
}

function bytes(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const m = /^(\d+)(|KiB|MiB|GiB)$/.exec(value.trim())
  if (m === null) throw new EdgeProxyError('EP_INVALID_REQUEST', `${flag}: expected a size in bytes, or with KiB, MiB or GiB (e.g. 10MiB), got "${value}"`)
  return Number(m[1]) * ({ '': 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 } as Record<string, number>)[m[2]]
}

function share(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new EdgeProxyError('EP_INVALID_REQUEST', `${flag}: expected a share from 0 to 1, got "${value}"`)
  return n
}

function positiveMs(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < 10) throw new EdgeProxyError('EP_INVALID_REQUEST', `${flag}: expected milliseconds (an integer ≥ 10), got "${value}"`)
  return n
}

function msAtLeast(value: string | undefined, flag: string, min: number): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) throw new EdgeProxyError('EP_INVALID_REQUEST', `${flag}: expected milliseconds (an integer ≥ ${min}), got "${value}"`)
  return n
}

function toOptions(flags: DaemonFlags): DaemonOptions {
  return {
    dataDir: flags.dataDir,
    name: flags.name,
    region: parseRegion(flags.region),
    roles: parseRoles(flags.roles),
    admin: parseHostPort(flags.admin, '--admin'),
    adminTokenFile: flags.adminTokenFile,
    fsync: flags.fsync,
    warmUp: flags.warmUp ? undefined : false, // on by default for a node in a fleet (tools/daemon.ts)
    publicAddr: flags.publicAddr,
    portMap: flags.portMap === undefined ? undefined : parsePortMap(flags.portMap),
    domain: flags.domain,
    flycastRange: flags.flycastRange === undefined ? undefined : parseFlycastRange(flags.flycastRange).cidr,
    flycastPortMap: flagPortMap(flags.flycastPortMap, '--flycast-port-map'),
    replayBodyLimit: bytes(flags.replayBodyLimit, '--replay-body-limit'),
    requestBodyLimit: bytes(flags.requestBodyLimit, '--request-body-limit'),
    requestLogSample: share(flags.requestLogSample, '--request-log-sample'),
    machineRange: flags.machineRange,
    backhaul: backhaulOptions(flags),
    autoscale: {
      autostopIntervalMs: msAtLeast(flags.autostopIntervalMs, '--autostop-interval-ms', MIN_AUTOSTOP_INTERVAL_MS),
      wakeTimeoutMs: msAtLeast(flags.wakeTimeoutMs, '--wake-timeout-ms', 100),
    },
    gossip: {
      listen: flags.gossipListen,
      announce: flags.gossipAnnounce,
      dialFrom: flags.gossipDialFrom,
      bootstrap: flags.bootstrap,
      fleet: flags.fleet,
      fleetKey: flags.fleetKey,
      heartbeatMs: positiveMs(flags.heartbeatMs, '--heartbeat-ms'),
      downAfterMs: positiveMs(flags.downAfterMs, '--down-after-ms'),
      syncIntervalMs: positiveMs(flags.syncIntervalMs, '--sync-interval-ms'),
    },
  }
}

/**
 * Runs a node until SIGTERM or SIGINT, then stops every component cleanly. The handlers are in place before
 * the node starts: a signal that arrives while it starts, or right after it logged `node started`, stops it
 * once started instead of killing it half way (Node's default for an unhandled SIGTERM).
 */
async function runUntilSignalled(options: DaemonOptions, logLevel: string | undefined, afterStart?: (daemon: Daemon) => Promise<void>): Promise<void> {
  const log = rootLogger(logLevel)
  let resolveSignal!: (signal: NodeJS.Signals) => void
  const signalled = new Promise<NodeJS.Signals>((resolve) => { resolveSignal = resolve })
  // the first signal stops the node; a second one finds no handler and ends the process at once
  const onSignal = (signal: NodeJS.Signals): void => {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
    resolveSignal(signal)
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  try {
    const daemon = await startDaemon(options, log)
    if (afterStart !== undefined) {
      try {
        await afterStart(daemon)
      } catch (err) {
        await daemon.stop()
        throw err
      }
    }
    log.info({ signal: await signalled }, 'signal received')
    await daemon.stop().catch((err: unknown) => log.error({ err }, 'stop failed'))
  } finally {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
  }
}

export function registerDaemonCommands(program: Command): void {
  program
    .command('daemon')
    .description('run a node of the fleet')
    .option('--data-dir <dir>', 'where the catalog, keys and Machine files live', './.edgeproxy')
    .requiredOption('--name <name>', 'node name, unique in the fleet (e.g. ams-1)')
    .requiredOption('--region <code>', 'three-letter region code (e.g. ams)')
    .option('--roles <roles>', 'edge, worker or edge,worker', 'edge,worker')
    .option('--admin <host:port>', 'admin API address', '127.0.0.1:4280')
    .option('--admin-token-file <file>', 'bearer token required by the admin API (mandatory off loopback)')
    .option('--log-level <level>', 'trace, debug, info, warn or error')
    .option('--no-fsync', 'do not fsync catalog writes (faster; a power cut may lose the newest writes)')
    .option('--no-warm-up', 'skip the Automerge warm-up after start of a node in a fleet (its first heal then compiles what it needs)')
    .option('--public-addr <ip>', 'edge: address public listeners bind', '127.0.0.1')
    .option('--port-map <pairs>', 'edge: public port → bound port, e.g. 80=8080,443=8443 (default: the same port)')
    .option('--domain <domain>', 'apps answer on <app>.<domain>', 'localhost')
    .option('--gossip-listen <multiaddr>', 'libp2p listen address (repeatable; default /ip4/127.0.0.1/tcp/4001)', collect)
    .option('--bootstrap <multiaddr>', 'a node to join the fleet through (repeatable)', collect)
    .option('--fleet <dir>', 'the folder `edgeproxy fleet init` wrote (fleet key, CA); without it the node runs alone')
    .option('--fleet-key <file>', 'just the fleet key file')
    .option('--heartbeat-ms <ms>', 'membership heartbeat period (default 2000)')
    .option('--down-after-ms <ms>', 'a node silent this long is down for routing (default 10000)')
    .option('--sync-interval-ms <ms>', 'anti-entropy period (default 5000)')
    .option('--autostop-interval-ms <ms>', 'how often idle Machines of this node are considered for autostop (default 60000, at least 1000)')
    .option('--wake-timeout-ms <ms>', 'how long a request waits for a Machine autostarted for it to become ready (default 30000)')
    .option('--flycast-range <cidr>', `private range Flycast addresses come from; the same on every node (default ${DEFAULT_FLYCAST_RANGE})`)
    .option('--flycast-port-map <pairs>', 'edge: app port → port bound on Flycast addresses, e.g. 80=8080 (default: the same port)')
    .option('--replay-body-limit <size>', 'request bodies kept for fly-replay up to this, e.g. 10MiB (default 10MiB)')
    .option('--request-body-limit <size>', 'largest request body forwarded; larger ones get 413, e.g. 100MiB (default 1GiB)')
    .option('--request-log-sample <share>', 'share of requests logged, 0…1 (default 0.01; responses ≥ 500 always)')
    .option('--machine-range <cidr>', 'worker: loopback range for Machine addresses (default 127.66.0.0/16; give nodes sharing a host distinct ranges)')
    .option('--backhaul-listen <host:port>', 'worker: where the mTLS backhaul listens when the fleet has a CA (default 127.0.0.1:0, any free port)')
    .option('--backhaul-announce <host:port>', 'the backhaul address other nodes dial (default: the bound address)')
    .option('--node-cert <file>', 'this node\'s backhaul certificate from `edgeproxy fleet node-cert` (default: DATA_DIR/backhaul/node.crt, issued at first start when the fleet folder holds ca.key)')
    .option('--node-key <file>', 'the key of --node-cert')
    .option('--gossip-announce <multiaddr>', 'gossip address peers dial instead of the listen address (repeatable; NAT, relays)', collect)
    .option('--gossip-dial-from <ip>', 'local address for outgoing gossip connections')
    .action(async (flags: DaemonFlags) => {
      try {
        await runUntilSignalled(toOptions(flags), flags.logLevel)
      } catch (err) {
        fail(err)
      }
    })

  program
    .command('dev')
    .description('run a single node (edge + worker) with its admin API on this machine')
    .option('--data-dir <dir>', 'data directory', './.edgeproxy')
    .option('--name <name>', 'node name', 'local')
    .option('--region <code>', 'region code', 'ams')
    .option('--admin <host:port>', 'admin API address', '127.0.0.1:4280')
    .option('--log-level <level>', 'trace, debug, info, warn or error', 'info')
    .option('--domain <domain>', 'apps answer on <app>.<domain>', 'localhost')
    .action(async (flags: Omit<DaemonFlags, 'roles' | 'fsync' | 'warmUp'>) => {
      try {
        const options = { ...toOptions({ ...flags, roles: 'edge,worker', fsync: true, warmUp: true }), portMap: { ...DEV_PORT_MAP }, flycastPortMap: { ...DEV_PORT_MAP } }
        await runUntilSignalled(options, flags.logLevel, async (daemon) => {
          await ensureDemoApp(daemon.catalog, { name: options.name, region: options.region })
          const flycast = await new FlycastAllocator(daemon.catalog, parseFlycastRange(options.flycastRange ?? DEFAULT_FLYCAST_RANGE), daemon.log).allocate(DEMO_APP)
          process.stderr.write([
            '',
            `  edgeproxy dev: node "${options.name}" (edge + worker) in ${options.region}, data in ${options.dataDir}`,
            `  demo app      ${DEMO_APP} with 2 Machines: http://${DEMO_APP}.${options.domain ?? 'localhost'}:8080 (301 to https://${DEMO_APP}.${options.domain ?? 'localhost'}:8443)`,
            `  Flycast       ${DEMO_APP}.flycast = ${flycast.record.flycast}: http://${flycast.record.flycast}:8080 from Machines ($FLY_FLYCAST_HOSTS)`,
            `  admin API     http://${daemon.admin.address()}   dashboard http://${daemon.admin.address()}/ui`,
            '  stop with Ctrl-C',
            '',
            '',
          ].join('\n'))
        })
      } catch (err) {
        fail(err)
      }
    })
}
