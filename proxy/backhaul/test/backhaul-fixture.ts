import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { openCatalog } from '../../../catalog/index.js'
import type { Catalog } from '../../../catalog/catalog-api.js'
import type { MachineRecord } from '../../../schemas/catalog-records.js'
import { parseAppConfigText } from '../../../schemas/parse-app-config.js'
import type { EdgeProxyError } from '../../../schemas/errors.js'
import { directConnector, type ConnectFacts, type MachineConnector } from '../../machine-connector.js'
import { toRoutable, type RoutableMachine } from '../../routing/routable-machine.js'
import { machineAddress } from '../../test/harness.js'
import { BackhaulClient, type BackhaulClientInit } from '../backhaul-client.js'
import { backhaulConnector } from '../backhaul-connector.js'
import { backhaulListener, type BackhaulListener, type BackhaulListenerInit } from '../backhaul-listener.js'
import { type TestCa, testCa } from './fleet-certs.js'

export const WORKER = 'iad-1'
export const EDGE = 'ams-1'

/** A Machine: a TCP server on its own loopback address that records what each connection sent. */
export interface TestMachine {
  addr: string
  port: number
  server: Server
  /** Every accepted connection, in order, with the bytes it has received so far. */
  connections: Array<{ socket: Socket; received: Buffer[] }>
  record?: MachineRecord
}

export async function tcpMachine(onSocket: (socket: Socket, m: TestMachine) => void = (s) => s.pipe(s)): Promise<TestMachine> {
  const addr = machineAddress()
  const m: TestMachine = { addr, port: 0, server: undefined as unknown as Server, connections: [] }
  m.server = createServer({ allowHalfOpen: true }, (socket) => {
    const entry = { socket, received: [] as Buffer[] }
    m.connections.push(entry)
    socket.on('data', (c: Buffer) => entry.received.push(c))
    socket.on('error', () => { /* the test reads what arrived */ })
    onSocket(socket, m)
  })
  m.server.listen(0, addr)
  await once(m.server, 'listening')
  m.port = (m.server.address() as AddressInfo).port
  return m
}

/**
 * A worker (catalog of node iad-1 in a temp dir, its backhaul listener) and an edge (ams-1: a backhaul
 * client and connector), with certificates from one openssl CA. Everything real, on 127.0.0.1.
 */
export interface BackhaulFixture {
  ca: TestCa
  catalog: Catalog
  listener: BackhaulListener
  client: BackhaulClient
  connector: MachineConnector
  machines: TestMachine[]
  /** Deploys app `web` with one raw TCP service on `internalPort`. */
  deploy(internalPort: number, app?: string): Promise<void>
  /** A Machine of `web` on this worker, started and ready at the TCP machine's address. */
  addMachine(m: TestMachine, opts?: { app?: string; node?: string; state?: 'started' | 'stopped' }): Promise<RoutableMachine>
  /** Where the edge believes the worker's backhaul is (default: the listener; tests put a chaos relay there). */
  publish(addr: string | undefined): void
  /** Opens a stream as the edge's proxy would. */
  open(machine: RoutableMachine, port: number, facts?: ConnectFacts): Promise<Socket>
  stop(): Promise<void>
}

export async function startBackhaulFixture(opts: { listener?: Partial<BackhaulListenerInit>; client?: Partial<BackhaulClientInit> } = {}): Promise<BackhaulFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'edgeproxy-backhaul-'))
  const log = pino({ level: process.env.EP_TEST_LOG ?? 'silent' })
  const ca = await testCa()
  const catalog = await openCatalog({ dataDir: dir, nodeName: WORKER, logger: log, sync: false })
  await catalog.upsertSelf({ name: WORKER, region: 'iad', roles: ['worker'], gossip: [], startedAt: Date.now(), load: { machines: 0, connections: 0 }, version: 'test' })
  const workerCert = await ca.issue(WORKER)
  const listener = backhaulListener({ host: '127.0.0.1', port: 0, tls: { ...workerCert, caPem: ca.certPem }, ...opts.listener })({ catalog, log })
  await listener.start()
  const edgeCert = await ca.issue(EDGE)
  const client = new BackhaulClient({ tls: { ...edgeCert, caPem: ca.certPem }, ...opts.client }, log)
  let published: string | undefined
  const connector = backhaulConnector({
    self: { node: EDGE, region: 'ams' },
    local: directConnector(),
    client,
    directory: { backhaulOf: (node) => (node === WORKER ? published ?? listener.address() : undefined) },
  })
  const machines: TestMachine[] = []
  const f: BackhaulFixture = {
    ca, catalog, listener, client, connector, machines,
    publish(addr) { published = addr },
    async deploy(internalPort, app = 'web') {
      await catalog.deployApp(parseAppConfigText(`app = "${app}"\n[[services]]\ninternal_port = ${internalPort}\n[[services.ports]]\nport = 9000\n`).config)
    },
    async addMachine(m, o = {}) {
      machines.push(m)
      const created = await catalog.createMachine({ app: o.app ?? 'web', region: 'iad', node: o.node ?? WORKER, spec: { cmd: ['test'], env: {}, processGroup: 'app' } })
      if ((o.node ?? WORKER) === WORKER) {
        await catalog.reportObserved(created.id, { state: o.state ?? 'started', reason: 'test', privateAddr: m.addr })
        await catalog.reportHealth(created.id, { checks: {}, ready: true })
      }
      m.record = catalog.getMachine(created.id)
      return toRoutable(m.record!)
    },
    open(machine, port, facts) {
      return new Promise((resolve, reject) => {
        connector.connect(machine, port, (err: EdgeProxyError | undefined, socket) => (err !== undefined ? reject(err) : resolve(socket!)), facts)
      })
    },
    async stop() {
      client.close()
      await listener.stop()
      for (const m of machines) {
        for (const c of m.connections) c.socket.destroy()
        m.server.close()
      }
      await catalog.close()
      await ca.remove()
      await rm(dir, { recursive: true, force: true })
    },
  }
  return f
}

/** Collects a stream until it ends or closes. */
export function readAll(socket: Socket, timeoutMs = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const timer = setTimeout(() => reject(new Error(`stream did not end within ${timeoutMs} ms (${Buffer.concat(chunks).length} bytes so far)`)), timeoutMs)
    socket.on('data', (c: Buffer) => chunks.push(c))
    const done = (): void => { clearTimeout(timer); resolve(Buffer.concat(chunks)) }
    socket.once('end', done)
    socket.once('close', done)
    socket.once('error', (err) => { clearTimeout(timer); reject(err) })
  })
}
