// Cloud Logging filters over the handlers' structured logs (functions/core/logger.ts: one JSON object
// per line, with `event` names). Cloud Run functions log as `cloud_run_revision` resources named
// after the function. Used by the log sink (storage.ts) and the log-based metrics (monitoring.ts).
import type { Topology } from "../functions/topology";
import type { HandlerRole } from "./services";

const quote = (s: string) => JSON.stringify(s);

/** Every worker service, one per pipeline. */
export function workerServices(topology: Topology): string[] {
  return topology.pipelines.map((x) => x.workerService);
}

/** Log entries from Tally's handlers (the coordinator, the reconciler and every worker, or the roles named). */
export function handlerLogFilter(topology: Topology, roles?: (HandlerRole | "worker")[]): string {
  const names = (roles ?? ["coordinator", "reconciler", "worker"])
    .flatMap((r) => (r === "worker" ? workerServices(topology) : [topology.services[r]]))
    .map(quote);
  return `resource.type="cloud_run_revision" AND resource.labels.service_name=(${names.join(" OR ")})`;
}

/** Entries with a given `event` name, optionally with extra conditions on jsonPayload fields. */
export function eventFilter(topology: Topology, event: string, ...conditions: string[]): string {
  return [handlerLogFilter(topology), `jsonPayload.event=${quote(event)}`, ...conditions].join(" AND ");
}
