import { EdgeProxyError } from '../../schemas/errors.js'

/** Request limits of the http handler (issue 6 "Hostile clients"). */
export interface HttpLimits {
  /** Request line plus header block; beyond it: 431. */
  maxHeadBytes: number
  /** Request target; beyond it: 414. */
  maxUrlBytes: number
  /** Bytes held for a request that is not being read yet (pipelining, routing); the client is paused beyond. */
  maxBufferedBytes: number
  /** A request body is kept up to this so a fly-replay can send it again; beyond it: 413 on replay (FLY-SPEC §6). */
  maxReplayBodyBytes: number
  /**
   * The largest request body the proxy forwards; beyond it: 413 (issue 11). A Content-Length over it is
   * refused before anything reaches a Machine; a chunked body that grows past it resets the Machine's side.
   */
  maxRequestBodyBytes: number
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxHeadBytes: 64 * 1024,
  maxUrlBytes: 8 * 1024,
  maxBufferedBytes: 256 * 1024,
  maxReplayBodyBytes: 10 * 1024 * 1024,
  // Bodies stream through (only the replay buffer above holds any), so this bounds what one request may push
  // at a Machine, not the proxy's memory. Fly documents no limit and uploads of hundreds of MB are normal at
  // an app's edge (nginx's 1 MiB default is a frequent surprise); 1 GiB stops an endless stream without
  // getting in the way of real uploads. `--request-body-limit` changes it.
  maxRequestBodyBytes: 1024 * 1024 * 1024,
}

/** 413 for a body over maxRequestBodyBytes, in words a client's developer can act on. */
export function bodyTooLarge(limit: number): EdgeProxyError {
  const size = limit % 1024 ** 3 === 0 ? `${limit / 1024 ** 3} GiB` : limit % 1024 ** 2 === 0 ? `${limit / 1024 ** 2} MiB` : `${limit} bytes`
  return new EdgeProxyError('EP_BODY_TOO_LARGE', `the request body is larger than this proxy's ${size} limit (--request-body-limit); send less, or raise the limit`)
}
