import { EdgeProxyError } from '../../schemas/errors.js'
import { FLYCAST_SUFFIX } from '../../schemas/flycast.js'
import type { ListenerState } from '../proxy-context.js'
import { isHttp } from './port-plan.js'
import type { RoutingIndex } from './routing-index.js'
import type { PortRoute } from './service-route.js'

/**
 * The first half of the route phase: which app and service a name (Host or SNI) reaches on this port.
 * `host` is lower-case without port; '' when the client sent none, which reaches a port's only app.
 */
export function routeForHost(index: RoutingIndex, listener: ListenerState, host: string, wantHttp: boolean): PortRoute | EdgeProxyError {
  const plan = listener.plan
  const app = plan.privateApp !== undefined ? index.app(plan.privateApp)
    : host === '' ? (plan.apps.size === 1 ? index.app(plan.first) : undefined) : index.appForHost(host)
  if (app === undefined) {
    if (host.endsWith(FLYCAST_SUFFIX)) {
      // a private name on a public listener (FLY-SPEC §9): refused, whatever app it names
      return new EdgeProxyError('EP_FLYCAST_ONLY', `"${host}" is a Flycast name, reachable only on its private address from this fleet's Machines, not on public port ${plan.publicPort}`)
    }
    const name = host === '' ? 'a request without a host name' : `"${host}"`
    return new EdgeProxyError('EP_NO_APP', `no app answers to ${name} on port ${plan.publicPort}; see \`edgeproxy catalog apps\``)
  }
  const route = plan.apps.get(app.name)
  if (route === undefined || (wantHttp && !isHttp(route))) {
    return new EdgeProxyError('EP_NO_APP', `app "${app.name}" has no ${wantHttp ? 'http ' : ''}service on port ${plan.publicPort}; check its fly.toml [[services.ports]]`)
  }
  return route
}
