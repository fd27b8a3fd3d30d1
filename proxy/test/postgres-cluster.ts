import { execFileSync } from 'node:child_process'
import { chownSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run } from './tools.js'

/**
 * A throwaway PostgreSQL cluster as a Machine (shared/TOOLCHAIN.md §2): initdb as the postgres user in a
 * temp dir, listening on a Machine address with ssl off (the proxy's pg_tls terminates TLS).
 */
export interface PgCluster {
  host: string
  port: number
  stop(): Promise<void>
}

/** The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<major>/bin). */
export function pgBin(): string {
  const versions = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(a) - Number(b))
  return join('/usr/lib/postgresql', versions[versions.length - 1], 'bin')
}

/** Runs a PostgreSQL tool as the postgres user (the server refuses to run as root). */
export function asPostgres(args: string[]): ReturnType<typeof run> {
  return run('runuser', ['-u', 'postgres', '--', ...args], { timeoutMs: 60_000 })
}

/** A fresh database folder `<root>/data`, owned by the postgres user and initdb'd; the caller removes `root`. */
export async function initPostgresData(prefix: string): Promise<{ root: string; data: string }> {
  const root = mkdtempSync(join(tmpdir(), prefix))
  const data = join(root, 'data')
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
  chownSync(root, uid, gid)
  const init = await asPostgres([join(pgBin(), 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8'])
  if (init.code !== 0) {
    rmSync(root, { recursive: true, force: true })
    throw new Error(`initdb failed: ${init.stderr}`)
  }
  return { root, data }
}

export async function startPostgres(host: string, port: number): Promise<PgCluster> {
  const bin = pgBin()
  const { root, data } = await initPostgresData('edgeproxy-pg-')
  const start = await asPostgres([join(bin, 'pg_ctl'), '-D', data, '-l', join(data, 'server.log'), '-w', '-o',
    `-c listen_addresses=${host} -p ${port} -k ${data} -c ssl=off -c fsync=off`, 'start'])
  if (start.code !== 0) {
    await asPostgres([join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop'])
    rmSync(root, { recursive: true, force: true })
    throw new Error(`pg_ctl start failed: ${start.stdout}${start.stderr}`)
  }
  return {
    host,
    port,
    async stop() {
      await asPostgres([join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop'])
      rmSync(root, { recursive: true, force: true })
    },
  }
}
