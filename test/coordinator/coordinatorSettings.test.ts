// The coordinator's item cap comes from the handler options, else the configuration
// (TALLY_MAX_ITEMS_PER_BATCH, read and checked by functions/config.ts), else core/limits.ts.
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../functions/config";
import { limits } from "../../functions/core/limits";
import { resolveSettings } from "../../functions/handlers/coordinator/coordinatorOptions";

const base = { GOOGLE_CLOUD_PROJECT: "p" };

describe("coordinator settings", () => {
  it("takes the item cap from the configuration, under the handler option", () => {
    const { env } = loadConfig({ ...base, TALLY_MAX_ITEMS_PER_BATCH: "1000" });
    expect(resolveSettings({}, env).maxItemsPerBatch).toBe(1000);
    expect(resolveSettings({ maxItemsPerBatch: 5 }, env).maxItemsPerBatch).toBe(5);
    expect(resolveSettings({}, loadConfig(base).env).maxItemsPerBatch).toBe(limits.maxItemsPerBatch);
  });

  it("refuses a cap that is not a positive integer or exceeds the built-in limit, naming the variable", () => {
    for (const bad of ["0", "-3", "1.5", "lots", String(limits.maxItemsPerBatch + 1)])
      expect(() => loadConfig({ ...base, TALLY_MAX_ITEMS_PER_BATCH: bad })).toThrow(
        /TALLY_MAX_ITEMS_PER_BATCH/,
      );
  });
});
