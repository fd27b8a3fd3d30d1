/** Polls `check` until it returns a truthy value or the deadline passes; for state that emits no event. */
export async function waitFor<T>(check: () => T | Promise<T>, options: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + (options.timeoutMs ?? 5000)
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value) return value as NonNullable<T>
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${options.timeoutMs ?? 5000} ms waiting for ${options.what ?? 'a condition'}${last ? `: ${String(last)}` : ''}`)
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 20))
  }
}
