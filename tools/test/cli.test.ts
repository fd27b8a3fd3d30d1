import { execFile, spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { request } from 'undici'
import { openCatalog } from '../../catalog/index.js'
import { BIN, type DaemonProcess, ROOT, runCli, startDaemonProcess } from '../../test/helpers/cli.js'
import { tempDir } from '../../test/helpers/temp-dir.js'
import { waitFor } from '../../test/helpers/wait-for.js'
import { demoAppCommand } from '../../machines/index.js'
import { DAEMON_NODE_FLAGS } from '../node-flags.js'

let dir: Awaited<ReturnType<typeof tempDir>>
let daemon: DaemonProcess | undefined

beforeEach(async () => { dir = await tempDir() })
afterEach(async () => {
  await daemon?.stop()
  daemon = undefined
  await dir.remove()
})

const FLY_TOML = `app = "web"
primary_region = "ams"

[http_service]
  internal_port = 8080
  force_https = true
`

async function startNode(name = 'ams-1'): Promise<DaemonProcess> {
  daemon = await startDaemonProcess(['daemon', '--data-dir', join(dir.path, name), '--name', name, '--region', 'ams', '--admin', '127.0.0.1:0', '--no-fsync'])
  return daemon
}

describe('a five-minute tour works', () => {
  test('deploy, list, run a Machine, inspect nodes, tail events, show a document', async () => {
    const node = await startNode()
    const api = ['--api', node.api]
    await writeFile(join(dir.path, 'fly.toml'), FLY_TOML)

    const deploy = await runCli([...api, 'apps', 'deploy'], { cwd: dir.path })
    expect(deploy).toMatchObject({ code: 0, stdout: 'deployed web (version 1)\n' })

    const ls = await runCli([...api, 'apps', 'ls'])
    expect(ls.stdout).toMatch(/^NAME\s+VERSION\s+REGION\s+PORTS/m)
    expect(ls.stdout).toMatch(/^web\s+1\s+ams\s+80,443\s+0/m)

    const run = await runCli([...api, '--json', 'machines', 'run', '--app', 'web', '--env', 'MODE=demo', '--', 'node', 'server.js', '--port', '8080'])
    expect(run.code).toBe(0)
    const machine = JSON.parse(run.stdout) as { id: string; spec: { cmd: string[]; env: Record<string, string> } }
    expect(machine.spec).toMatchObject({ cmd: ['node', 'server.js', '--port', '8080'], env: { MODE: 'demo' } })

    const machines = await runCli([...api, 'machines', 'ls', '--app', 'web'])
    expect(machines.stdout).toContain(machine.id)
    const stop = await runCli([...api, 'machines', 'stop', machine.id])
    expect(stop.stdout).toContain('desired stopped')

    const nodes = await runCli([...api, 'catalog', 'nodes'])
    expect(nodes.stdout).toMatch(/ams-1 \(this node\)\s+ams\s+edge,worker\s+up/)

    const tail = await runCli([...api, 'events', 'tail', '--from', '1'])
    const types = tail.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)[3])
    expect(types[0]).toBe('node.joined')
    expect(types.filter((t) => t === 'app.upserted' || t === 'machine.upserted')).toEqual(['app.upserted', 'machine.upserted', 'machine.upserted'])

    const show = await runCli([...api, 'catalog', 'show', 'web'])
    expect(JSON.parse(show.stdout)).toMatchObject({ docId: 'app:web', app: { name: 'web' }, machines: [{ id: machine.id }] })
  })

  test('events replay rebuilds the catalog as it stood at a seq from a stopped node', async () => {
    const node = await startNode()
    await writeFile(join(dir.path, 'fly.toml'), FLY_TOML)
    await runCli(['--api', node.api, 'apps', 'deploy'], { cwd: dir.path })
    const seqOf = async () => ((await (await request(`${node.api}/healthz`)).body.json()) as { seq: number }).seq
    const deployedAt = await seqOf()
    const run = await runCli(['--api', node.api, '--json', 'machines', 'run', '--app', 'web', '--', 'x'])
    const id = (JSON.parse(run.stdout) as { id: string }).id
    const machineAt = await seqOf()
    await runCli(['--api', node.api, 'apps', 'rm', 'web'])
    expect(await node.stop()).toBe(0)
    daemon = undefined

    const atDeploy = await runCli(['events', 'replay', '--data-dir', join(dir.path, 'ams-1'), '--to', String(deployedAt)])
    expect(atDeploy.code).toBe(0)
    expect(atDeploy.stdout).toContain(`catalog at seq ${deployedAt}`)
    expect(atDeploy.stdout).toMatch(/^web\s+1\s+ams/m)
    expect(atDeploy.stdout).not.toContain(id)
    const atMachine = await runCli(['--json', 'events', 'replay', '--data-dir', join(dir.path, 'ams-1'), '--to', String(machineAt)])
    expect(JSON.parse(atMachine.stdout)).toMatchObject({ seq: machineAt, apps: [{ name: 'web' }], machines: [{ id, desired: 'started' }] })
    const atEnd = await runCli(['--json', 'events', 'replay', '--data-dir', join(dir.path, 'ams-1')])
    expect(JSON.parse(atEnd.stdout)).toMatchObject({ apps: [], machines: [{ id, desired: 'destroyed' }] })
  })
})

describe('errors are one actionable line and a non-zero exit', () => {
  test('an invalid fly.toml names the field and line, and nothing is deployed', async () => {
    const node = await startNode()
    await writeFile(join(dir.path, 'fly.toml'), FLY_TOML.replace('force_https = true', 'force_https = "yes"'))
    const res = await runCli(['--api', node.api, 'apps', 'deploy'], { cwd: dir.path })
    expect(res.code).toBe(2)
    expect(res.stderr).toBe('error: fly.toml: http_service.force_https: expected boolean, got string (line 6) [EP_INVALID_CONFIG]\n')
    expect((await runCli(['--api', node.api, '--json', 'apps', 'ls'])).stdout.trim()).toBe('[]')
  })

  test('an unreachable API names the address', async () => {
    const res = await runCli(['--api', 'http://127.0.0.1:9', 'apps', 'ls'])
    expect(res.code).toBe(1)
    expect(res.stderr).toMatch(/^error: cannot reach the edgeproxy admin API at http:\/\/127\.0\.0\.1:9 \(ECONNREFUSED\)/)
  })

  test('unknown things are 404s with the next step', async () => {
    const node = await startNode()
    const res = await runCli(['--api', node.api, 'machines', 'start', '0123456789abcd'])
    expect(res.code).toBe(1)
    expect(res.stderr).toContain('no Machine "0123456789abcd"; see `edgeproxy machines ls` [EP_MACHINE_NOT_FOUND]')
    const missingFile = await runCli(['--api', node.api, 'apps', 'deploy', 'nope.toml'], { cwd: dir.path })
    expect(missingFile).toMatchObject({ code: 2, stderr: 'error: cannot read nope.toml: ENOENT [EP_INVALID_REQUEST]\n' })
  })

  test('a bad flag value is refused before anything starts', async () => {
    const res = await runCli(['daemon', '--data-dir', dir.path, '--name', 'x', '--region', 'amsterdam'])
    expect(res.code).toBe(2)
    expect(res.stderr).toContain('--region: expected a three-letter region code')
  })
})

describe('durability', () => {
  test('SIGKILL during a burst of writes loses no acknowledged write', async () => {
    const node = await startDaemonProcess(['daemon', '--data-dir', join(dir.path, 'ams-1'), '--name', 'ams-1', '--region', 'ams', '--admin', '127.0.0.1:0'])
    daemon = node
    await writeFile(join(dir.path, 'fly.toml'), FLY_TOML)
    await runCli(['--api', node.api, 'apps', 'deploy'], { cwd: dir.path })

    const acknowledged: string[] = []
    let failures = 0
    const writer = async (): Promise<void> => {
      for (;;) {
        try {
          const res = await request(`${node.api}/v1/apps/web/machines`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ cmd: ['x'] }) })
          const body = (await res.body.json()) as { id: string }
          if (res.statusCode === 201) acknowledged.push(body.id)
        } catch {
          failures++
          return
        }
      }
    }
    const writers = Array.from({ length: 8 }, () => writer())
    while (acknowledged.length < 150) await new Promise((r) => setTimeout(r, 5))
    await node.kill()
    daemon = undefined
    await Promise.all(writers)
    expect(failures).toBeGreaterThan(0) // the writers really were cut off mid-burst

    const catalog = await openCatalog({ dataDir: join(dir.path, 'ams-1'), nodeName: 'ams-1' })
    try {
      const present = new Set(catalog.listMachines({ app: 'web' }).map((m) => m.id))
      expect(acknowledged.filter((id) => !present.has(id))).toEqual([])
      const events = []
      for await (const e of catalog.readEvents(1)) events.push(e)
      expect(events.map((e) => e.seq)).toEqual(Array.from({ length: catalog.lastSeq }, (_, i) => i + 1))
    } finally {
      await catalog.close()
    }
  })
})

describe('Machines really run', () => {
  test('machines run starts a real process whose logs the CLI prints; destroy ends it', async () => {
    const node = await startNode()
    const api = ['--api', node.api]
    await writeFile(join(dir.path, 'fly.toml'), FLY_TOML)
    await runCli([...api, 'apps', 'deploy'], { cwd: dir.path })
    const run = await runCli([...api, '--json', 'machines', 'run', '--app', 'web', '--', ...demoAppCommand()])
    const { id } = JSON.parse(run.stdout) as { id: string }

    const started = await waitFor(async () => {
      const res = await request(`${node.api}/v1/machines/${id}`)
      const m = (await res.body.json()) as { state: string; ready: boolean; privateAddr?: string }
      return m.state === 'started' && m.ready ? m : undefined
    }, { timeoutMs: 15_000, what: 'the Machine to be started and ready' })
    const hello = await request(`http://${started.privateAddr}:8080/`)
    expect(await hello.body.json()).toMatchObject({ app: 'web', machine: id, region: 'ams' })

    const logs = await runCli([...api, 'machines', 'logs', id])
    expect(logs.code).toBe(0)
    expect(logs.stdout).toContain(`demo app web (Machine ${id}, region ams) listening on http://${started.privateAddr}:8080`)

    expect((await runCli([...api, 'machines', 'destroy', id])).code).toBe(0)
    await waitFor(async () => {
      const res = await request(`${node.api}/v1/machines/${id}`)
      const m = (await res.body.json()) as { state?: string }
      return res.statusCode === 404 || m.state === 'destroyed'
    }, { timeoutMs: 15_000, what: 'the Machine to be destroyed' })
    await expect(request(`http://${started.privateAddr}:8080/`)).rejects.toThrow(/ECONNREFUSED/)
  })
})

test('the edgeproxy executable runs with the daemon\'s node flags: its #! line passes DAEMON_NODE_FLAGS', async () => {
  const bin = join(ROOT, 'bin', 'edgeproxy.js')
  const [shebang] = (await readFile(bin, 'utf8')).split('\n')
  expect(shebang).toBe(`#!/usr/bin/env -S node ${DAEMON_NODE_FLAGS.join(' ')}`)
  // run through the #! line itself, as npx and a PATH install do
  const { stdout } = await promisify(execFile)(bin, ['--version'], { timeout: 10_000 })
  expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/)
})

describe('Automerge warm-up after start', () => {
  const logLines = (node: DaemonProcess, msg: string): Array<Record<string, unknown>> => node.logs().split('\n')
    .filter((l) => l.includes(`"msg":"${msg}"`))
    .map((l) => JSON.parse(l) as Record<string, unknown>)

  const inFleet = async (name: string, ...extra: string[]): Promise<DaemonProcess> => {
    const fleet = join(dir.path, 'fleet')
    if ((await runCli(['fleet', 'init', '--out', fleet])).code !== 0) throw new Error('fleet init failed')
    daemon = await startDaemonProcess(['daemon', '--data-dir', join(dir.path, name), '--name', name, '--region', 'ams', '--admin', '127.0.0.1:0', '--no-fsync', '--fleet', fleet, '--gossip-listen', '/ip4/127.0.0.1/tcp/0', ...extra])
    return daemon
  }
  const stopped = async (node: DaemonProcess): Promise<void> => {
    expect(await node.stop()).toBe(0)
    daemon = undefined
    expect(logLines(node, 'node stopped')).toHaveLength(1)
  }

  test('a node in a fleet warms Automerge up in the background and says so', async () => {
    const node = await inFleet('ams-1')
    const [done] = await waitFor(() => {
      const lines = logLines(node, 'Automerge warmed up')
      return lines.length > 0 ? lines : undefined
    }, { timeoutMs: 20_000, what: 'the warm-up to end' })
    expect(done).toMatchObject({ rounds: 10, aborted: false })
    await stopped(node)
  })

  test('--no-warm-up leaves it out, and so does a node alone (it never heals)', async () => {
    for (const node of [await inFleet('ams-1', '--no-warm-up'), await startNode('lhr-1')]) {
      // a request answered: the node is up and past the moment the warm-up would have started
      const res = await request(`${node.api}/v1/nodes`)
      await res.body.dump()
      expect(res.statusCode).toBe(200)
      await stopped(node)
      expect(logLines(node, 'Automerge warmed up')).toHaveLength(0)
    }
  })

  test('a SIGTERM while the node is still starting stops it once started, cleanly (not Node\'s default kill)', async () => {
    const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, BIN, 'daemon', '--data-dir', join(dir.path, 'ams-1'), '--name', 'ams-1', '--region', 'ams', '--admin', '127.0.0.1:0', '--no-fsync'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let firstChunk: string | undefined
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      // its first line (no fleet key: gossip is off) comes while the node is still starting
      if (firstChunk === undefined) { firstChunk = d.toString(); child.kill('SIGTERM') }
    })
    const [code, signal] = await waitFor(() => (child.exitCode !== null || child.signalCode !== null ? [child.exitCode, child.signalCode] : undefined), { timeoutMs: 30_000, what: 'the daemon to exit' })
    expect(firstChunk).not.toContain('"msg":"node started"')
    expect({ code, signal }).toEqual({ code: 0, signal: null })
    expect(out).toContain('"msg":"node stopped"')
  })

  test('a node stopped while it warms up stops at once and cleanly', async () => {
    const node = await inFleet('ams-1')
    await stopped(node)
    expect(logLines(node, 'Automerge warmed up')).toMatchObject([{ aborted: true }])
  })
})
