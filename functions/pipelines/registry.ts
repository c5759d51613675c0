// The pipeline registry: the only place the platform learns which pipelines exist. The coordinator
// validates submissions against it; the worker runs items through it. Add your own pipeline by
// writing it next to these and listing it here.
import type { PipelineDefinition } from "./definePipeline";
import { demoPipeline } from "./demo";
import { textStatsPipeline } from "./textStats";

// biome-ignore lint/suspicious/noExplicitAny: pipelines differ in payload type; each validates its own.
const registered: PipelineDefinition<any>[] = [demoPipeline, textStatsPipeline];

// biome-ignore lint/suspicious/noExplicitAny: see above
const byName = new Map<string, PipelineDefinition<any>>(registered.map((p) => [p.name, p]));

export function getPipeline(name: string): PipelineDefinition<unknown> | undefined {
  return byName.get(name);
}

export function pipelineNames(): string[] {
  return [...byName.keys()];
}
