import { defineConfig } from 'vitest/config'

/**
 * `npm run test:hardening` (issue 11): the whole system under hostile input, faults and load — real
 * daemons, real attack tools, real PostgreSQL. Slow by design (minutes), so it is not part of `npm test`.
 * Files run one at a time: several measure latency or timing, and a second busy file on the two cores
 * would measure the neighbour instead.
 */
export default defineConfig({
  test: {
    setupFiles: ['./test/setup.ts'],
    include: ['test/hardening/**/*.test.ts'],
    testTimeout: 240_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    reporters: ['default'],
  },
})
