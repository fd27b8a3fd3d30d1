import type { Command } from 'commander'
import { rootLogger } from '../logger.js'
import { type Daemon, type DaemonOptions, startDaemon } from '../daemon.js'
import { DEMO_APP, ensureDemoApp } from '../dev-demo.js'
import { fail } from './output.js'
import { collect, parseHostPort, parsePortMap, parseRegion, parseRoles } from './options.js'
import { EdgeProxyError } from '../../schemas/errors.js'
import { DEV_PORT_MAP } from '../../proxy/index.js'

interface DaemonFlags {
  dataDir: string
  name: string
  region: string
  roles: string
  admin: string
  adminTokenFile?: string
  logLevel?: string
  fsync: boolean
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
}

function positiveMs(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < 10) throw new EdgeProxyError('EP_INVALID_REQUEST', `${flag}: expected milliseconds (an integer ≥ 10), got "${value}"`)
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
    publicAddr: flags.publicAddr,
    portMap: flags.portMap === undefined ? undefined : parsePortMap(flags.portMap),
    domain: flags.domain,
    gossip: {
      listen: flags.gossipListen,
      bootstrap: flags.bootstrap,
      fleet: flags.fleet,
      fleetKey: flags.fleetKey,
      heartbeatMs: positiveMs(flags.heartbeatMs, '--heartbeat-ms'),
      downAfterMs: positiveMs(flags.downAfterMs, '--down-after-ms'),
      syncIntervalMs: positiveMs(flags.syncIntervalMs, '--sync-interval-ms'),
    },
  }
}

/** Runs a node until SIGTERM or SIGINT, then stops every component cleanly. */
async function runUntilSignalled(options: DaemonOptions, logLevel: string | undefined, afterStart?: (daemon: Daemon) => Promise<void>): Promise<void> {
  const log = rootLogger(logLevel)
  const daemon = await startDaemon(options, log)
  if (afterStart !== undefined) {
    try {
      await afterStart(daemon)
    } catch (err) {
      await daemon.stop()
      throw err
    }
  }
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      log.info({ signal }, 'signal received')
      process.off('SIGTERM', onSignal)
      process.off('SIGINT', onSignal)
      daemon.stop().then(resolve, (err: unknown) => {
        log.error({ err }, 'stop failed')
        resolve()
      })
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  })
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
    .option('--public-addr <ip>', 'edge: address public listeners bind', '127.0.0.1')
    .option('--port-map <pairs>', 'edge: public port → bound port, e.g. 80=8080,443=8443 (default: the same port)')
    .option('--domain <domain>', 'apps answer on <app>.<domain>', 'localhost')
    .option('--gossip-listen <multiaddr>', 'libp2p listen address (repeatable; default /ip4/127.0.0.1/tcp/4001)', collect)
    .option('--bootstrap <multiaddr>', 'a node to join the fleet through (repeatable)', collect)
    .option('--fleet <dir>', 'the folder `edgeproxy fleet init` wrote (fleet key); without it the node runs alone')
    .option('--fleet-key <file>', 'just the fleet key file')
    .option('--heartbeat-ms <ms>', 'membership heartbeat period (default 2000)')
    .option('--down-after-ms <ms>', 'a node silent this long is down for routing (default 10000)')
    .option('--sync-interval-ms <ms>', 'anti-entropy period (default 5000)')
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
    .action(async (flags: Omit<DaemonFlags, 'roles' | 'fsync'>) => {
      try {
        const options = { ...toOptions({ ...flags, roles: 'edge,worker', fsync: true }), portMap: { ...DEV_PORT_MAP } }
        await runUntilSignalled(options, flags.logLevel, async (daemon) => {
          await ensureDemoApp(daemon.catalog, { name: options.name, region: options.region })
          process.stderr.write([
            '',
            `  edgeproxy dev: node "${options.name}" (edge + worker) in ${options.region}, data in ${options.dataDir}`,
            `  demo app      ${DEMO_APP} with 2 Machines: http://${DEMO_APP}.${options.domain ?? 'localhost'}:8080 (301 to https://${DEMO_APP}.${options.domain ?? 'localhost'}:8443)`,
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
