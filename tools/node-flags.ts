/**
 * V8 flags the daemon runs with: bin/edgeproxy.js passes them in its `#!` line, and whatever starts
 * `node bin/edgeproxy.js` itself (a service unit, the test helpers, the soak bench) passes these.
 *
 * A 32 MiB semi-space (V8's default is 16): gossip, sync and the catalog allocate many short-lived buffers,
 * and with the default young generation the scavenger ran often enough to cost about a tenth of a node's CPU
 * while a partition healed (docs/benchmarks.md). It costs at most 32 MiB more RSS under load.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=32']
