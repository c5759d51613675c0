// Cloud Logging filters over the handlers' structured logs (functions/core/logger.ts: one JSON object
// per line, with `event` names). Cloud Run functions log as `cloud_run_revision` resources named
// after the function. Used by the log sink (storage.ts) and the log-based metrics (monitoring.ts).
import type { Topology } from "../functions/topology";
import type { HandlerRole } from "./services";

const quote = (s: string) => JSON.stringify(s);

/** Log entries from Tally's handlers (all three, or the ones named). */
export function handlerLogFilter(topology: Topology, roles?: HandlerRole[]): string {
  const names = (roles ?? (["coordinator", "worker", "reconciler"] as HandlerRole[])).map((r) =>
    quote(topology.services[r]),
  );
  return `resource.type="cloud_run_revision" AND resource.labels.service_name=(${names.join(" OR ")})`;
}

/** Entries with a given `event` name, optionally with extra conditions on jsonPayload fields. */
export function eventFilter(topology: Topology, event: string, ...conditions: string[]): string {
  return [handlerLogFilter(topology), `jsonPayload.event=${quote(event)}`, ...conditions].join(" AND ");
}
