import { Counter, type Registry } from 'prom-client'

/** name, help, and a read of a monotonic total some component keeps as a plain number. */
export type CounterSource = [name: string, help: string, read: () => number]

/** Exposes plain totals as Prometheus counters, read at scrape time. */
export function readCounters(registry: Registry, sources: CounterSource[]): void {
  for (const [name, help, read] of sources) {
    new Counter({
      name, help, registers: [registry],
      collect() {
        this.reset()
        this.inc(read())
      },
    })
  }
}
