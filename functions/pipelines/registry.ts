// The pipeline registry: the only place the platform learns which pipelines exist. The coordinator
// validates submissions against it; the worker runs items through it. Add your own pipeline by
// writing it next to these and listing it here — or, for a service you already run, declare an
// HTTP pipeline in TALLY_HTTP_PIPELINES (httpPipeline.ts; issue #17 §4), no code.
//
// HTTP pipelines are read from the process environment on first use and again whenever the
// variable's text changes; a bad declaration, or a name that collides with a code pipeline, throws
// an Error naming each bad field (loadConfig, run when a handler is built, throws the same).
import type { PipelineDefinition } from "./definePipeline";
import { demoPipeline } from "./demo";
import { buildHttpPipeline, parseHttpPipelineDeclarations } from "./httpPipeline";
import { textStatsPipeline } from "./textStats";

export const httpPipelinesVariable = "TALLY_HTTP_PIPELINES";

// biome-ignore lint/suspicious/noExplicitAny: pipelines differ in payload type; each validates its own.
const registered: PipelineDefinition<any>[] = [demoPipeline, textStatsPipeline];

// biome-ignore lint/suspicious/noExplicitAny: see above
const byName = new Map<string, PipelineDefinition<any>>(registered.map((p) => [p.name, p]));

/** Names of the pipelines written in code (an HTTP pipeline may not take one). */
export const codePipelineNames: readonly string[] = [...byName.keys()];

let http: { raw: string | undefined; byName: Map<string, PipelineDefinition<unknown>> } | undefined;

function httpPipelines(): Map<string, PipelineDefinition<unknown>> {
  const raw = process.env[httpPipelinesVariable];
  if (http && http.raw === raw) return http.byName;
  const parsed = parseHttpPipelineDeclarations(raw, httpPipelinesVariable, codePipelineNames);
  if (!parsed.ok) throw new Error(`invalid HTTP pipeline declarations: ${parsed.problems.join("; ")}`);
  http = { raw, byName: new Map(parsed.declarations.map((d) => [d.name, buildHttpPipeline(d)])) };
  return http.byName;
}

export function getPipeline(name: string): PipelineDefinition<unknown> | undefined {
  return byName.get(name) ?? httpPipelines().get(name);
}

export function pipelineNames(): string[] {
  return [...byName.keys(), ...httpPipelines().keys()];
}
