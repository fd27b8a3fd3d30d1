/**
 * The proxy data plane of one node: public listeners from the catalog, the tls / pg_tls / proxy_proto /
 * http handlers, routing and load balancing with concurrency tiers and a capacity queue.
 *
 * @example
 * const proxy = proxyServer({ region: 'ams', portMap: DEV_PORT_MAP })({ catalog, log: log.child({ component: 'proxy' }) })
 * await proxy.start()            // listeners open for every deployed app's service ports
 * await proxy.whenApplied(catalog.lastSeq)
 * await proxy.stop()             // stop accepting, drain in-flight requests, close
 */
import { DefaultProxyServer, type ProxyServer, type ProxyServerComponents, type ProxyServerInit } from './proxy-server.js'

export { DEV_PORT_MAP, type ProxyServer, type ProxyServerComponents, type ProxyServerInit } from './proxy-server.js'
export type { ClosenessView } from './routing/closeness.js'
export type { RouteExplanation } from './routing/explain.js'
export { explainAt, type ExplainAtInit } from './routing/explain-at.js'
export { readRoutingHint } from './routing/routing-hints.js'
export type { RoutingHints } from './routing/balancer.js'
export type { MachineConnector } from './machine-connector.js'
export { directConnector } from './machine-connector.js'
export type { ConnectFacts } from './machine-connector.js'
export { BackhaulClient, type BackhaulClientInit, type BackhaulClientStats } from './backhaul/backhaul-client.js'
export { backhaulConnector } from './backhaul/backhaul-connector.js'
export { backhaulListener, type BackhaulListener, type BackhaulListenerInit } from './backhaul/backhaul-listener.js'
export { NodeDirectory } from './backhaul/node-directory.js'
export type { BackhaulTls } from './backhaul/tls-options.js'
export type { MachineStarter, MachineStopper } from './autoscale/machine-control.js'
export { type AutoscaleInit, DEFAULT_AUTOSCALE_OPTIONS, MIN_AUTOSTOP_INTERVAL_MS } from './autoscale/autoscale-options.js'
export type { AutostartStats } from './autoscale/autostarter.js'
export type { AutostopStats } from './autoscale/autostopper.js'
export type { ForwardedLoad } from './autoscale/forwarded-load.js'
export type { ProxyStats } from './stats.js'
export type { ProxyTimeouts } from './proxy-context.js'
export { ERROR_HEADER } from './error-response.js'
export type { RequestMetrics, Phase } from './observe/request-metrics.js'
export { PHASES } from './observe/request-metrics.js'
export type { LatencyHistogram } from './observe/latency-histogram.js'
export type { MachineLoad } from './observe/machine-loads.js'

export function proxyServer(init: ProxyServerInit) {
  return (components: ProxyServerComponents): ProxyServer => new DefaultProxyServer(components, init)
}
