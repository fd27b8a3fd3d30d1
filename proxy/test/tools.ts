import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Real command-line clients for tests (curl, openssl): their output, exit code included. */
export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: opts.timeoutMs ?? 15_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...opts.env } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
    child.stdin?.end(opts.input ?? '')
  })
}

/** An EC certificate for `names` (first one is the CN), made by openssl: PEM strings. */
export async function opensslCertificate(names: string[]): Promise<{ certPem: string; keyPem: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'edgeproxy-cert-'))
  try {
    const san = names.map((n) => `DNS:${n}`).join(',')
    const r = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${san}`])
    if (r.code !== 0) throw new Error(`openssl req failed: ${r.stderr}`)
    return { certPem: await readFile(join(dir, 'cert.pem'), 'utf8'), keyPem: await readFile(join(dir, 'key.pem'), 'utf8') }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** The subject line `openssl s_client` prints for the certificate served to `servername`. */
export async function servedSubject(port: number, servername: string | undefined, extra: string[] = []): Promise<RunResult & { subject: string | undefined }> {
  const args = ['s_client', '-connect', `127.0.0.1:${port}`, ...(servername === undefined ? ['-noservername'] : ['-servername', servername]), ...extra]
  const r = await run('openssl', args, { input: '' })
  const subject = /subject=([^\n]*)/.exec(r.stdout)?.[1]?.trim()
  return { ...r, subject }
}
