import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { CatalogReader } from '../../catalog/index.js'
import type { GossipNode, GossipStats } from '../../gossip/index.js'
import { type BackhaulListener, type LatencyHistogram, PHASES, type ProxyServer } from '../../proxy/index.js'
import { histogramText } from './histogram-text.js'
import { type CounterSource, readCounters } from './counter-source.js'

export interface MetricsSources {
  catalog: CatalogReader
  proxy?: ProxyServer
  gossip?: GossipNode
  /** A worker's backhaul listener (absent on edge-only nodes and without a fleet CA). */
  backhaul?: Pick<BackhaulListener, 'stats'>
}

/**
 * `/metrics` (Prometheus text). Components keep plain counters on their hot paths; they are read here at
 * scrape time, so metrics cost the data plane nothing between scrapes.
 */
export function metricsRegistry(sources: MetricsSources): { registry: Registry; render: () => Promise<string> } {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'edgeproxy_' })
  const { catalog, proxy, gossip, backhaul } = sources

  new Gauge({
    name: 'edgeproxy_catalog_seq', help: 'Seq of the newest event in this node\'s catalog event log', registers: [registry],
    collect() { this.set(catalog.lastSeq) },
  })
  new Gauge({
    name: 'edgeproxy_catalog_apps', help: 'Apps in the catalog', registers: [registry],
    collect() { this.set(catalog.listApps().length) },
  })
  new Gauge({
    name: 'edgeproxy_catalog_machines', help: 'Machines in the catalog by observed state', labelNames: ['state'], registers: [registry],
    collect() {
      this.reset()
      for (const m of catalog.listMachines()) this.inc({ state: m.state })
    },
  })
  new Gauge({
    name: 'edgeproxy_catalog_quarantined_docs', help: 'Catalog documents set aside (edgeproxy catalog quarantine)', registers: [registry],
    collect() { this.set(catalog.listQuarantined().length) },
  })

  if (proxy !== undefined) {
    const s = proxy.stats
    const counters: CounterSource[] = [
      ['edgeproxy_proxy_connections_accepted_total', 'Client connections accepted', () => s.connectionsAccepted],
      ['edgeproxy_proxy_tls_handshakes_total', 'TLS handshakes completed', () => s.tlsHandshakes],
      ['edgeproxy_proxy_tls_handshake_failures_total', 'TLS handshakes that failed', () => s.tlsHandshakeFailures],
      ['edgeproxy_proxy_pg_ssl_requests_total', 'Postgres SSLRequests answered', () => s.pgSslRequests],
      ['edgeproxy_proxy_requests_total', 'HTTP requests routed (all handlers)', () => s.requests],
      ['edgeproxy_proxy_responses_total', 'HTTP responses relayed', () => s.responses],
      ['edgeproxy_proxy_queued_total', 'Requests that waited for capacity (all Machines at hard_limit)', () => s.queued],
      ['edgeproxy_proxy_queue_timeouts_total', 'Queued requests answered 503 EP_CAPACITY', () => s.queueTimeouts],
      ['edgeproxy_proxy_queue_rejected_total', 'Requests refused because the queue was full', () => s.queueRejected],
      ['edgeproxy_proxy_upstream_connects_total', 'New connections to Machines', () => s.upstreamConnects],
      ['edgeproxy_proxy_upstream_connect_failures_total', 'Failed connections to Machines', () => s.upstreamConnectFailures],
      ['edgeproxy_proxy_upstream_reused_total', 'Requests sent on a pooled keep-alive connection', () => s.upstreamReused],
      ['edgeproxy_proxy_retries_total', 'Requests retried on another Machine', () => s.retries],
      ['edgeproxy_proxy_streams_forwarded_total', 'Raw TCP / proxy_proto / pg streams forwarded', () => s.streamsForwarded],
      ['edgeproxy_proxy_upgrades_total', 'Upgraded (WebSocket) connections', () => s.upgrades],
      ['edgeproxy_proxy_h2_streams_total', 'HTTP/2 streams from clients', () => s.h2Streams],
    ]
    readCounters(registry, counters)
    new Gauge({
      name: 'edgeproxy_proxy_connections_open', help: 'Client connections open now', registers: [registry],
      collect() { this.set(s.connectionsOpen) },
    })
    new Counter({
      name: 'edgeproxy_requests_total', help: 'Requests (HTTP) and streams (tcp, tls, pg_tls) finished, by app, handler and status; a forwarded stream counts as 200', labelNames: ['app', 'handler', 'status'], registers: [registry],
      collect() {
        this.reset()
        for (const [app, byHandler] of proxy.requests.counts) {
          for (const [handler, byStatus] of byHandler) for (const [status, n] of byStatus) this.inc({ app, handler, status: String(status) }, n)
        }
      },
    })
    new Gauge({
      name: 'edgeproxy_machine_load', help: 'Open connections or in-flight requests per Machine and service, as this proxy counts them', labelNames: ['app', 'machine', 'service', 'type'], registers: [registry],
      collect() {
        this.reset()
        for (const l of proxy.loads().loads) this.set({ app: l.app, machine: l.machine, service: String(l.service), type: l.type }, l.load)
      },
    })
    new Gauge({
      name: 'edgeproxy_proxy_queue_depth', help: 'Requests waiting for capacity now (every Machine at hard_limit)', registers: [registry],
      collect() { this.set(proxy.loads().queued) },
    })
    const autostart = proxy.autoscale.autostart
    if (autostart !== undefined) {
      readCounters(registry, [
        ['edgeproxy_autostart_starts_total', 'Machines started or resumed for a request', () => autostart.starts],
        ['edgeproxy_autostart_woke_total', 'Autostarts that ended with the Machine ready', () => autostart.woke],
        ['edgeproxy_autostart_failures_total', 'Autostarts that failed or timed out', () => autostart.startFailures],
      ])
    }
    const autostop = proxy.autoscale.autostop
    if (autostop !== undefined) {
      readCounters(registry, [
        ['edgeproxy_autostop_stopped_total', 'Machines stopped by autostop', () => autostop.stopped],
        ['edgeproxy_autostop_suspended_total', 'Machines suspended by autostop', () => autostop.suspended],
      ])
    }
    labelledTotals(registry, 'edgeproxy_proxy_route_errors_total', 'Requests that could not be routed, by error code', () => s.routeErrors)
    labelledTotals(registry, 'edgeproxy_proxy_client_errors_total', 'Client requests refused (smuggling, limits, timeouts), by error code', () => s.clientErrors)
  }

  // one snapshot of the gossip counters per scrape, taken in render()
  let gossipSnapshot: GossipStats | undefined
  if (gossip !== undefined) {
    const g = (): GossipStats => (gossipSnapshot ??= gossip.stats())
    readCounters(registry, [
      ['edgeproxy_gossip_changes_published_total', 'Catalog change messages published', () => g().changesPublished],
      ['edgeproxy_gossip_changes_received_total', 'Catalog change messages received', () => g().changesReceived],
      ['edgeproxy_gossip_changes_applied_total', 'Received change messages applied', () => g().changesApplied],
      ['edgeproxy_gossip_changes_not_forwarded_total', 'Change messages not forwarded: the publisher had reached every peer this node would tell', () => g().changesNotForwarded],
      ['edgeproxy_gossip_changes_already_held_total', 'Change messages that brought nothing new here: not applied again, not forwarded', () => g().changesAlreadyHeld],
      ['edgeproxy_gossip_heartbeats_sent_total', 'Heartbeats published', () => g().heartbeatsSent],
      ['edgeproxy_gossip_heartbeats_received_total', 'Heartbeats received', () => g().heartbeatsReceived],
      ['edgeproxy_gossip_heartbeats_not_forwarded_total', 'Heartbeats not forwarded: the publisher had reached every peer this node would tell', () => g().heartbeatsNotForwarded],
      ['edgeproxy_gossip_forwards_spared_total', 'Peers left out of a forwarded message because its publisher had sent it to them', () => g().forwardsSpared],
      ['edgeproxy_gossip_sync_sessions_total', 'Anti-entropy sessions this node started', () => g().syncInitiated],
      ['edgeproxy_gossip_sync_failures_total', 'Anti-entropy sessions that failed', () => g().syncFailed],
      ['edgeproxy_gossip_sync_deferred_total', 'Anti-entropy sessions put off behind a running one with a peer in the same state', () => g().syncDeferred],
      ['edgeproxy_gossip_sync_docs_converged_total', 'Documents brought level by anti-entropy', () => g().syncDocsConverged],
      ['edgeproxy_gossip_sync_docs_pushed_total', 'Of those, documents one side was ahead on, sent as the changes the other lacked (no Automerge rounds)', () => g().syncDocsPushed],
      ['edgeproxy_gossip_sync_docs_relayed_total', 'Documents a sync brought that this node broadcast on to peers that may lack them', () => g().syncDocsRelayed],
      ['edgeproxy_gossip_redial_pauses_total', 'Times redials of unreachable peers paused because one of many came back (a partition healing)', () => g().redialPauses],
      // the refusals an operator looks for when a node cannot join, or when something knocks on the gossip port
      ['edgeproxy_gossip_handshake_failures_total', 'Connections that failed the private-network handshake (another fleet key, or not an edgeproxy node)', () => g().handshakeFailures],
    ])
    new Counter({
      name: 'edgeproxy_gossip_dropped_total', help: 'Gossip messages dropped, by kind and reason', labelNames: ['kind', 'reason'], registers: [registry],
      collect() {
        const c = g()
        this.reset()
        for (const [reason, n] of Object.entries(c.droppedChanges)) this.inc({ kind: 'changes', reason }, n)
        for (const [reason, n] of Object.entries(c.droppedHeartbeats)) this.inc({ kind: 'heartbeat', reason }, n)
      },
    })
    new Gauge({
      name: 'edgeproxy_gossip_peers', help: 'Connected gossip peers', registers: [registry],
      collect() { this.set(g().peers) },
    })
    new Gauge({
      name: 'edgeproxy_gossip_nodes', help: 'Known nodes by liveness as this node sees them', labelNames: ['state'], registers: [registry],
      collect() {
        this.reset()
        for (const n of gossip.nodes()) this.inc({ state: n.state })
      },
    })
  }

  if (backhaul !== undefined) {
    readCounters(registry, [
      ['edgeproxy_backhaul_connections_accepted_total', 'Backhaul connections from fleet nodes (mutual TLS passed)', () => backhaul.stats().connectionsAccepted],
      ['edgeproxy_backhaul_handshake_failures_total', 'Backhaul TLS handshakes refused: no client certificate, another CA, not TLS, wrong version or ALPN', () => backhaul.stats().handshakeFailures],
      ['edgeproxy_backhaul_peers_rejected_total', 'Backhaul peers whose certificate chained to the fleet CA but is no usable node certificate', () => backhaul.stats().peersRejected],
      ['edgeproxy_backhaul_opens_refused_total', 'Backhaul OPENs answered with OPEN_FAIL', () => backhaul.stats().refused],
    ])
  }
  return {
    registry,
    render: async () => {
      gossipSnapshot = undefined
      const text = await registry.metrics()
      if (proxy === undefined) return text
      const phases = PHASES.map((p): [string, LatencyHistogram] => [p, proxy.requests.phases[p]])
      const wake = proxy.autoscale.wakeLatency
      return text
        + histogramText('edgeproxy_request_phase_seconds', 'Time per request lifecycle phase on this node: route (incl. queue and autostart), upstream (to the first response byte), response, total', 'phase', phases)
        + (wake === undefined ? '' : histogramText('edgeproxy_autostart_wake_seconds', 'From asking a Machine to start for a request to the Machine ready', 'kind', [['start', wake]]))
    },
  }
}

function labelledTotals(registry: Registry, name: string, help: string, read: () => Record<string, number>): void {
  new Counter({
    name, help, labelNames: ['code'], registers: [registry],
    collect() {
      this.reset()
      for (const [code, n] of Object.entries(read())) this.inc({ code }, n)
    },
  })
}
