import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { openCatalog } from '../../catalog/index.js'
import type { Catalog } from '../../catalog/catalog-api.js'
import type { AppRecord, MachineRecord } from '../../schemas/catalog-records.js'
import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import { proxyServer, type ProxyServer, type ProxyServerInit } from '../index.js'

export const NODE = 'edge-1'
export const REGION = 'ams'

/** Loopback addresses for Machines: one third octet per test process, so parallel workers do not collide. */
let nextHost = 1
export function machineAddress(): string {
  const octet3 = (process.pid % 200) + 20
  const host = nextHost
  nextHost = (nextHost % 250) + 1
  return `127.66.${octet3}.${host}`
}

export interface TestMachine {
  /** Loopback address the Machine listens on (its privateAddr). */
  addr: string
  server: HttpServer | NetServer
  record?: MachineRecord
  /** Requests it received (http Machines). */
  requests: IncomingMessage[]
}

export type MachineHandler = (req: IncomingMessage, res: ServerResponse, machine: TestMachine) => void

/** Default Machine: answers with its address and the headers it saw, as JSON. */
export const echoHandler: MachineHandler = (req, res, machine) => {
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    const body = JSON.stringify({ machine: machine.addr, method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString() })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
}

export interface Harness {
  catalog: Catalog
  proxy: ProxyServer
  machines: TestMachine[]
  /** Binds `count` http Machines on distinct loopback addresses, all on one port (the app's internal_port). */
  httpMachines(count: number, handler?: MachineHandler): Promise<{ port: number; machines: TestMachine[] }>
  /** Machines that are any listening server (h2c, a child's socket…), bound the same way. */
  customMachines(count: number, make: (machine: TestMachine) => NetServer): Promise<{ port: number; machines: TestMachine[] }>
  /** Same with raw TCP servers. */
  tcpMachines(count: number, onSocket: (socket: Socket, machine: TestMachine) => void): Promise<{ port: number; machines: TestMachine[] }>
  deploy(toml: string, hostnames?: string[]): Promise<AppRecord>
  /** Creates the Machine in the catalog, reports it started at its address, ready and passing. */
  addMachine(app: string, machine: TestMachine, opts?: { region?: string; node?: string; processGroup?: string; ready?: boolean }): Promise<MachineRecord>
  /** Waits until the proxy has applied everything the catalog has. */
  settle(): Promise<void>
  port(publicPort: number): number
  url(publicPort: number, path?: string): string
  stop(): Promise<void>
}

export async function startHarness(init: Partial<ProxyServerInit> = {}, options: { log?: pino.Logger } = {}): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'edgeproxy-proxy-'))
  const log = options.log ?? pino({ level: process.env.EP_TEST_LOG ?? 'silent' })
  let catalog: Catalog | undefined
  let proxy: ProxyServer
  try {
    catalog = await openCatalog({ dataDir: dir, nodeName: NODE, logger: log, sync: false })
    await catalog.upsertSelf({
      name: NODE, region: REGION, roles: ['edge', 'worker'], gossip: [], startedAt: Date.now(),
      load: { machines: 0, connections: 0 }, version: 'test',
    })
    proxy = proxyServer({ region: REGION, portMap: () => 0, ...init })({ catalog, log })
    await proxy.start()
  } catch (err) {
    await catalog?.close()
    await rm(dir, { recursive: true, force: true })
    throw err
  }
  const machines: TestMachine[] = []

  const bindAll = async <S extends HttpServer | NetServer>(count: number, make: (m: TestMachine) => S): Promise<{ port: number; machines: TestMachine[] }> => {
    const out: TestMachine[] = []
    let port = 0
    for (let i = 0; i < count; i++) {
      const m: TestMachine = { addr: machineAddress(), server: undefined as unknown as S, requests: [] }
      m.server = make(m)
      m.server.listen(port, m.addr)
      await once(m.server, 'listening')
      port = (m.server.address() as AddressInfo).port
      out.push(m)
      machines.push(m)
    }
    return { port, machines: out }
  }

  const h: Harness = {
    catalog: catalog!,
    proxy,
    machines,
    httpMachines(count, handler = echoHandler) {
      return bindAll(count, (m) => {
        const server = createHttpServer((req, res) => { m.requests.push(req); handler(req, res, m) })
        server.keepAliveTimeout = 5000
        return server
      })
    },
    customMachines(count, make) {
      return bindAll(count, make)
    },
    tcpMachines(count, onSocket) {
      return bindAll(count, (m) => createNetServer({ allowHalfOpen: true }, (s) => onSocket(s, m)))
    },
    async deploy(toml, hostnames) {
      const record = await catalog.deployApp(parseAppConfigText(toml).config, { hostnames })
      await h.settle()
      return record
    },
    async addMachine(app, machine, opts = {}) {
      const created = await catalog.createMachine({ app, region: opts.region ?? REGION, node: opts.node ?? NODE, spec: { cmd: ['test-machine'], env: {}, processGroup: opts.processGroup ?? 'app' } })
      await catalog.reportObserved(created.id, { state: 'started', reason: 'test', privateAddr: machine.addr })
      if (opts.ready !== false) await catalog.reportHealth(created.id, { checks: {}, ready: true })
      machine.record = catalog.getMachine(created.id)
      await h.settle()
      return machine.record!
    },
    async settle() {
      await proxy.whenApplied(catalog.lastSeq)
    },
    port(publicPort) {
      const p = proxy.boundPort(publicPort)
      if (p === undefined) throw new Error(`no listener for public port ${publicPort}`)
      return p
    },
    url(publicPort, path = '/') {
      return `http://127.0.0.1:${h.port(publicPort)}${path}`
    },
    async stop() {
      await proxy.stop()
      for (const m of machines) {
        const s = m.server as HttpServer
        s.closeAllConnections?.()
        s.close()
      }
      await catalog.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
  return h
}

/** A fly.toml with one http service on port 80 (and 443 with tls when `tls` is set). */
export function httpApp(app: string, internalPort: number, extra = ''): string {
  return `app = "${app}"\nprimary_region = "${REGION}"\n\n[[services]]\ninternal_port = ${internalPort}\nprotocol = "tcp"\n${extra}\n[[services.ports]]\nport = 80\nhandlers = ["http"]\n`
}
