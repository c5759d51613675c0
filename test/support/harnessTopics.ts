// The handler test harnesses observe one work topic: their queues route every pipeline's doorbells
// there (a worker under test takes any pipeline: no TALLY_WORKER_PIPELINE). Routing each pipeline to
// its own topic is the topology's job (functions/topology.ts), tested in test/infra and end to end
// by test/local/pipelineRouting.test.ts.
import type { Topology } from "../../functions/topology";

/** The one topic a harness publishes every pipeline's doorbells on. */
export function harnessWorkTopic(t: Topology): string {
  return `${t.prefix}-work-harness`;
}

/** The push subscription a worker harness creates on it. */
export function harnessWorkSubscription(t: Topology): string {
  return `${harnessWorkTopic(t)}-push`;
}
