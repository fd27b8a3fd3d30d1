import { configDefaults, defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    setupFiles: ['./test/setup.ts'],
    include: ['{schemas,catalog,gossip,proxy,machines,tools}/**/*.test.ts', 'test/**/*.test.ts'],
    // the hardening suite is slow and has its own config (vitest.hardening.config.ts, npm run test:hardening)
    exclude: [...configDefaults.exclude, 'test/hardening/**'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // real sockets, child processes and libp2p nodes: two cores, so keep parallelism modest
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
})
