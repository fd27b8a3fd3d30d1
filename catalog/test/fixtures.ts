import { parseAppConfigText } from '../../schemas/parse-app-config.js'
import type { AppConfig } from '../../schemas/app-config.js'

export function webConfig(app = 'web', extra = ''): AppConfig {
  return parseAppConfigText(`app = "${app}"\nprimary_region = "ams"\n[http_service]\ninternal_port = 8080\n${extra}`).config
}
