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
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxHeadBytes: 64 * 1024,
  maxUrlBytes: 8 * 1024,
  maxBufferedBytes: 256 * 1024,
  maxReplayBodyBytes: 10 * 1024 * 1024,
}
