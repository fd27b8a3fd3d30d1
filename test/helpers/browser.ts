import { chromium, type Browser, type Locator } from 'playwright-core'

/** Debian's chromium (installed by .ci/run); playwright-core never downloads a browser. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 })
}

/** Waits until the element's text passes `check` (Playwright-style web-first assertion for vitest). */
export async function waitForText(locator: Locator, check: string | ((text: string) => boolean), timeoutMs = 10_000): Promise<string> {
  const test = typeof check === 'string' ? (t: string) => t.includes(check) : check
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < deadline) {
    last = (await locator.textContent({ timeout: timeoutMs })) ?? ''
    if (test(last)) return last
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out waiting for ${typeof check === 'string' ? `text containing "${check}"` : 'the expected text'}; last text: "${last}"`)
}
