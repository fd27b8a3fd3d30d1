import pino, { type Logger } from 'pino'

/** The daemon's one root logger: structured JSON lines; components take `log.child({ component })`. */
export function rootLogger(level: string = process.env.EDGEPROXY_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime })
}
