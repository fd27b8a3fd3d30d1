/**
 * Every error edgeproxy reports carries a stable code (programs match it) and a message a person can act
 * on. The table maps each code to the HTTP status it becomes at the admin API or on the data plane, and,
 * where one exists, to the Fly Proxy error code a Fly user already knows (docs/errors.md lists them all).
 */
export const ERROR_TABLE = {
  // configuration and API input
  EP_INVALID_CONFIG: { status: 400, fly: undefined },
  EP_INVALID_REQUEST: { status: 400, fly: undefined },
  EP_UNAUTHORIZED: { status: 401, fly: undefined },
  EP_NOT_FOUND: { status: 404, fly: undefined },
  EP_APP_NOT_FOUND: { status: 404, fly: 'PA04' },
  EP_MACHINE_NOT_FOUND: { status: 404, fly: 'PR02' },
  EP_CONFLICT: { status: 409, fly: undefined },
  EP_MACHINE_DESTROYED: { status: 409, fly: 'PM07' },
  // catalog
  EP_EVENT_GAP: { status: 500, fly: undefined },
  EP_EVENT_TRUNCATED: { status: 410, fly: undefined },
  EP_DOC_QUARANTINED: { status: 409, fly: undefined },
  EP_CATALOG_CLOSED: { status: 503, fly: undefined },
  // gossip
  EP_FLEET_KEY_INVALID: { status: 400, fly: undefined },
  EP_FLEET_CA_INVALID: { status: 400, fly: undefined },
  EP_NODE_CERT_INVALID: { status: 400, fly: undefined },
  EP_PEER_KEY_INVALID: { status: 500, fly: undefined },
  EP_GOSSIP_MESSAGE_INVALID: { status: 400, fly: undefined },
  EP_SYNC_FAILED: { status: 502, fly: undefined },
  EP_SYNC_THROTTLED: { status: 429, fly: undefined },
  // machines
  EP_MACHINE_SPAWN_FAILED: { status: 500, fly: 'PM06' },
  EP_MACHINE_CRASH_LOOP: { status: 500, fly: 'PM06' },
  EP_MACHINE_ADDRESS_EXHAUSTED: { status: 503, fly: undefined },
  // data plane
  EP_NO_APP: { status: 404, fly: undefined },
  EP_NO_SERVICE: { status: 404, fly: undefined },
  EP_NO_HEALTHY_MACHINE: { status: 503, fly: 'PR01' },
  EP_CAPACITY: { status: 503, fly: 'PR03' },
  EP_MACHINE_UNREACHABLE: { status: 502, fly: 'PC01' },
  EP_MACHINE_RESET: { status: 502, fly: 'PC03' },
  EP_MACHINE_TIMEOUT: { status: 504, fly: 'PC05' },
  EP_BACKHAUL_UNREACHABLE: { status: 502, fly: 'PU03' },
  EP_AUTOSTART_TIMEOUT: { status: 503, fly: 'PM03' },
  EP_AUTOSTART_FAILED: { status: 503, fly: 'PM04' },
  EP_REPLAY_BODY_TOO_LARGE: { status: 413, fly: 'PA01' },
  EP_REPLAY_LOOP: { status: 508, fly: 'PA02' },
  EP_REPLAY_INVALID: { status: 502, fly: 'PA03' },
  EP_REPLAY_TARGET_NOT_FOUND: { status: 502, fly: 'PA04' },
  EP_REPLAY_TIMEOUT: { status: 504, fly: undefined },
  EP_BAD_REQUEST: { status: 400, fly: 'PU04' },
  EP_HEADERS_TOO_LARGE: { status: 431, fly: undefined },
  EP_URI_TOO_LONG: { status: 414, fly: undefined },
  EP_BODY_TOO_LARGE: { status: 413, fly: undefined },
  EP_REQUEST_TIMEOUT: { status: 408, fly: undefined },
  EP_HTTP_VERSION: { status: 505, fly: undefined },
  EP_BAD_GATEWAY_RESPONSE: { status: 502, fly: 'PU02' },
  EP_FLYCAST_ONLY: { status: 403, fly: undefined },
  EP_TLS_NO_CERT: { status: 502, fly: 'PT05' },
  EP_SHUTTING_DOWN: { status: 503, fly: undefined },
  EP_INTERNAL: { status: 500, fly: undefined },
} as const satisfies Record<string, { status: number; fly: string | undefined }>

export type ErrorCode = keyof typeof ERROR_TABLE

export interface EdgeProxyErrorOptions extends ErrorOptions {
  /** The field an input error is about, as a dotted path (`services.0.concurrency.hard_limit`). */
  path?: string
}

export class EdgeProxyError extends Error {
  readonly status: number
  readonly path: string | undefined

  constructor(readonly code: ErrorCode, message: string, options: EdgeProxyErrorOptions = {}) {
    super(message, options)
    this.name = 'EdgeProxyError'
    this.status = ERROR_TABLE[code].status
    this.path = options.path
  }

  static from(err: unknown): EdgeProxyError {
    if (err instanceof EdgeProxyError) return err
    return new EdgeProxyError('EP_INTERNAL', 'unexpected error; see the node log', { cause: err })
  }

  static is(err: unknown, code: ErrorCode): boolean {
    return err instanceof EdgeProxyError && err.code === code
  }

  toJSON(): { code: ErrorCode; message: string; path?: string } {
    return this.path === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, path: this.path }
  }
}
