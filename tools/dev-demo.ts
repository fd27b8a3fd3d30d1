import type { Catalog } from '../catalog/index.js'
import { demoAppCommand } from '../machines/index.js'
import { parseAppConfigText } from '../schemas/parse-app-config.js'

export const DEMO_APP = 'hello'
const DEMO_MACHINES = 2

/** The demo app `edgeproxy dev` serves: the same fly.toml `fly launch` would write for a small web app. */
export const DEMO_FLY_TOML = `app = "${DEMO_APP}"
primary_region = "ams"

[http_service]
  internal_port = 8080
  force_https = true
  auto_stop_machines = "off"
  auto_start_machines = true
  min_machines_running = 0
  [http_service.concurrency]
    type = "requests"
    soft_limit = 20
    hard_limit = 25
  [[http_service.checks]]
    grace_period = "1s"
    interval = "10s"
    timeout = "2s"
    path = "/healthz"
`

/**
 * Deploys the demo app with two Machines unless it is already there, so that restarting `edgeproxy dev`
 * keeps the same Machines (and their addresses) instead of piling up new ones.
 */
export async function ensureDemoApp(catalog: Catalog, node: { name: string; region: string }): Promise<void> {
  const { config } = parseAppConfigText(DEMO_FLY_TOML.replace('primary_region = "ams"', `primary_region = "${node.region}"`), { file: 'demo fly.toml' })
  if (catalog.getApp(DEMO_APP) === undefined) await catalog.deployApp(config)
  const cmd = demoAppCommand()
  const live = catalog.listMachines({ app: DEMO_APP }).filter((m) => m.desired !== 'destroyed')
  for (let i = live.length; i < DEMO_MACHINES; i++) {
    await catalog.createMachine({ app: DEMO_APP, region: node.region, node: node.name, spec: { cmd, env: { DEMO_GREETING: 'hello from edgeproxy' } } })
  }
}
