import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { EdgeProxyError } from '../../schemas/errors.js'
import { ApiClient, type ApiOptions } from './api-client.js'
import { ago, fail, printJson, printTable } from './output.js'

type Globals = ApiOptions & { json?: boolean }

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new EdgeProxyError('EP_INVALID_REQUEST', `cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

export function registerCertsCommands(program: Command): void {
  const certs = program.command('certs').description('TLS certificates served by SNI (else a self-signed default)')

  certs
    .command('add <hostname> <cert> <key>')
    .description('add or replace the certificate for a hostname (PEM files; wildcards as *.example.com)')
    .action(async (hostname: string, certPath: string, keyPath: string, _f: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const body = { hostname, certPem: await readPem(certPath, 'certificate'), keyPem: await readPem(keyPath, 'key') }
        const res = await new ApiClient(g).call<{ hostname: string; notAfter: string }>('POST', '/v1/certs', body)
        if (g.json === true) printJson(res)
        else process.stdout.write(`certificate for ${res.hostname} added (valid until ${res.notAfter})\n`)
      } catch (err) {
        fail(err)
      }
    })

  certs.command('ls').description('list certificates').action(async (_f: unknown, cmd: Command) => {
    const g = cmd.optsWithGlobals<Globals>()
    try {
      const list = await new ApiClient(g).call<Array<{ hostname: string; addedAt: number; notAfter: string; names: string }>>('GET', '/v1/certs')
      printTable(list.map((c) => ({ hostname: c.hostname, 'valid until': c.notAfter, names: c.names, added: ago(c.addedAt) })), ['hostname', 'valid until', 'names', 'added'], g.json === true, list)
    } catch (err) {
      fail(err)
    }
  })

  certs.command('rm <hostname>').description('remove a certificate').action(async (hostname: string, _f: unknown, cmd: Command) => {
    const g = cmd.optsWithGlobals<Globals>()
    try {
      await new ApiClient(g).call('DELETE', `/v1/certs/${encodeURIComponent(hostname)}`)
      process.stdout.write(`removed the certificate for ${hostname}\n`)
    } catch (err) {
      fail(err)
    }
  })
}
