import type { Command } from 'commander'
import { ApiClient, type ApiOptions } from './api-client.js'
import { fail, printJson } from './output.js'

type Globals = ApiOptions & { json?: boolean }

interface FlycastAnswer {
  app: string
  name: string
  address: string
  ports: number[]
  range: string
  allocated: boolean
}

/** `edgeproxy apps flycast APP`: the app's private address (allocated on first use), FLY-SPEC §9. */
export function registerAppsFlycastCommand(apps: Command): void {
  apps
    .command('flycast <app>')
    .description('give an app its private Flycast address (<app>.flycast), or show the one it has')
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<Globals>()
      try {
        const res = await new ApiClient(g).call<FlycastAnswer>('POST', `/v1/apps/${encodeURIComponent(name)}/flycast`, {})
        if (g.json === true) { printJson(res); return }
        const ports = res.ports.length === 0 ? 'no service ports: nothing is reachable over Flycast until the app has [[services]]' : `ports ${res.ports.join(', ')}`
        process.stdout.write(`${res.name} → ${res.address} (${res.allocated ? `allocated from ${res.range}` : 'already allocated'}; ${ports})\n`)
        process.stdout.write('Machines resolve the name through the file in $FLY_FLYCAST_HOSTS; see docs/replay-and-flycast.md\n')
      } catch (err) {
        fail(err)
      }
    })
}
