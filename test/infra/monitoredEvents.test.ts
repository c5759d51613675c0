// Every log-based metric counts an event the handlers actually emit. A metric whose filter names an
// event no code logs (a typo, a renamed event) is created without complaint and its alert never
// fires: the class of defect checked here, for every metric the stack declares.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseInfraConfig } from "../../infra/config";
import { logMetricSpecs } from "../../infra/monitoring";

/** `log.info|warn|error("event.name", …)` calls in functions/, by event name. */
function emittedEvents(dir: string): Set<string> {
  const events = new Set<string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (path.endsWith(".ts"))
        for (const m of readFileSync(path, "utf8").matchAll(
          /\.(?:info|warn|error)\(\s*"([a-z_]+\.[a-z_.]+)"/g,
        ))
          events.add(m[1]!);
    }
  };
  walk(dir);
  return events;
}

/** The `jsonPayload.event="…"` values a Logging filter matches. */
const eventsNamed = (filter: string) =>
  [...filter.matchAll(/jsonPayload\.event\s*=\s*"([^"]+)"/g)].map((m) => m[1]!);

describe("log-based metrics", () => {
  const emitted = emittedEvents(join(__dirname, "../../functions"));
  const specs = logMetricSpecs(parseInfraConfig(() => undefined, { stack: "dev" }));

  it("finds the handlers' events (the scan itself works)", () => {
    expect(emitted.has("batch.finalized")).toBe(true);
    expect(emitted.has("item.dead_lettered")).toBe(true);
    expect(emitted.size).toBeGreaterThan(20);
  });

  it("each metric's event is one the handlers emit", () => {
    const problems: string[] = [];
    for (const [key, spec] of Object.entries(specs))
      for (const event of eventsNamed(spec.filter))
        if (!emitted.has(event)) problems.push(`${key}: no handler logs event "${event}"`);
    expect(problems).toEqual([]);
    // Every metric names an event (the reconciler's ERROR lines by exclusion of message.poison).
    for (const spec of Object.values(specs)) expect(eventsNamed(spec.filter).length).toBeGreaterThan(0);
  });

  it("would catch a metric on an event nobody logs", () => {
    expect(eventsNamed('jsonPayload.event="batch.export_gaveup"').every((e) => emitted.has(e))).toBe(false);
  });
});
