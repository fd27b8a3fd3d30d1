/**
 * V8 flags the daemon runs with: bin/edgeproxy.js passes them in its `#!` line, and whatever starts
 * `node bin/edgeproxy.js` itself (a service unit, the test helpers, the soak bench) passes these.
 *
 * A 32 MiB semi-space (V8's default is 16): gossip, sync and the catalog allocate many short-lived buffers,
 * and with the default young generation the scavenger ran often enough to cost about a tenth of a node's CPU
 * while a partition healed (docs/benchmarks.md). It costs at most 32 MiB more RSS under load.
 *
 * An interrupt budget eight times V8's default: a function is optimized by TurboFan only after eight times as
 * much execution. A node's lukewarm code — connection set-up (Noise, identify, yamux, gossipsub), sync sessions —
 * runs only when links come back, a few dozen times per heal; with the default budget each heal made ~40 more
 * such functions per node cross the line, and their optimizing compiles were a fifth to a quarter of a 20-node
 * fleet's CPU through its first heals (perf, docs/benchmarks.md). Hot code (the proxy's per-request path, a
 * busy sync) still crosses the line within moments.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=32', '--interrupt-budget=540672']
