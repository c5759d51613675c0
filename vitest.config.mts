import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The end-to-end chaos scenarios run with `npm run test:chaos` until they are verified to fit
    // CI's time budget on a quiet machine (their fault-injection refusal tests stay in npm test).
    exclude: ["**/node_modules/**", ...(process.env.TALLY_CHAOS ? [] : ["test/chaos/chaos.test.ts"])],
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
