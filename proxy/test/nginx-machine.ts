import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * nginx as a Machine: a real, independent implementation to check what the proxy sends (the PROXY
 * protocol header in particular). Runs in the foreground as a child and is stopped by the test.
 */
export interface NginxMachine {
  stop(): Promise<void>
}

export async function startNginxMachine(addr: string, port: number, serverBlock: string): Promise<NginxMachine> {
  const dir = await mkdtemp(join(tmpdir(), 'edgeproxy-nginx-'))
  await mkdir(join(dir, 'logs'))
  const conf = `worker_processes 1;
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen ${addr}:${port} ${serverBlock}
  }
}
`
  await writeFile(join(dir, 'nginx.conf'), conf)
  const child: ChildProcess = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  // ready when it accepts
  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, addr)
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (ok) break
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`nginx did not start: ${stderr}`) }
    await new Promise((r) => setTimeout(r, 20))
  }
  return {
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM')
        await once(child, 'exit')
      }
      await rm(dir, { recursive: true, force: true })
    },
  }
}
