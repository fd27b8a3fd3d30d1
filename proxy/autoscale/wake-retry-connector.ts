import type { Socket } from 'node:net'
import type { EdgeProxyError } from '../../schemas/errors.js'
import type { ConnectFacts, MachineConnector } from '../machine-connector.js'
import type { RoutableMachine } from '../routing/routable-machine.js'

/** What the connector needs from autostart: was this Machine woken moments ago? */
export interface WakeWindow {
  inWakeWindow(machineId: string): boolean
  readonly stats: { wakeRetries: number }
}

const FIRST_RETRY_MS = 10
const MAX_RETRY_MS = 200

/**
 * FLY-SPEC §10, cold-start 502s: an app may open its port, pass a check, and still refuse a connection
 * moments later (a server that rebinds while it boots, a worker pool restarting). A refusal from a
 * Machine inside its wake window is retried with a short backoff instead of failing the request; outside
 * the window the first error stands, as before. Wraps whichever connector reaches Machines (direct or backhaul).
 */
export function wakeRetryConnector(inner: MachineConnector, window: WakeWindow): MachineConnector {
  return {
    connect(machine, port, done, facts) {
      inner.connect(machine, port, (err, socket) => {
        if (err === undefined || !isRefusal(err) || !window.inWakeWindow(machine.id)) { done(err, socket); return }
        retry(inner, window, machine, port, FIRST_RETRY_MS, facts, done)
      }, facts)
    },
  }
}

function retry(inner: MachineConnector, window: WakeWindow, machine: RoutableMachine, port: number, delayMs: number,
  facts: ConnectFacts | undefined, done: (err: EdgeProxyError | undefined, socket: Socket | undefined) => void): void {
  window.stats.wakeRetries++
  setTimeout(() => {
    inner.connect(machine, port, (err, socket) => {
      if (err === undefined || !isRefusal(err) || !window.inWakeWindow(machine.id)) { done(err, socket); return }
      retry(inner, window, machine, port, Math.min(MAX_RETRY_MS, delayMs * 2), facts, done)
    }, facts)
  }, delayMs)
}

/** Nothing listened or the listener reset us: the app is (re)binding. Timeouts are not retried (they already waited). */
function isRefusal(err: EdgeProxyError): boolean {
  if (err.code !== 'EP_MACHINE_UNREACHABLE') return false
  const code = (err.cause as NodeJS.ErrnoException | undefined)?.code
  return code === 'ECONNREFUSED' || code === 'ECONNRESET'
}
