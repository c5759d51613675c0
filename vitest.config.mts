import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The chaos suite (test/chaos/chaos.test.ts, ~10 min on 2 idle cores) is part of `npm test`;
    // `npm run test:chaos` runs it alone.
    globalSetup: ["test/support/globalSetup.ts"],
    pool: "forks",
    // Two cores: the emulators need their share; each test file uses its own project id, so
    // files never see each other's data.
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: process.env.CI ? ["default"] : ["default"],
  },
});
