// The batch-level part of a submission (shared by JSON bodies and NDJSON header lines): header
// fields, the pipeline, the dependencies — and then the batch itself (created, or the stored one
// when the same id comes back).
import { conflict, TallyError } from "../../core/errors";
import type { Batch } from "../../core/model";
import { defaultFailureThreshold } from "../../core/outcome";
import type { PipelineDefinition } from "../../pipelines/definePipeline";
import { getPipeline, pipelineNames } from "../../pipelines/registry";
import { batchContentHash } from "./contentHash";
import type { ProblemList } from "./problems";
import type { SubmissionEnv } from "./submissionWriter";
import { ndjsonHeaderSchema, zodProblems } from "./validation";

export interface ResolvedHeader {
  batchId: string;
  /** The client sent no id: a re-submission cannot find this batch again. */
  generatedId: boolean;
  pipeline: PipelineDefinition<unknown>;
  failureThreshold: number;
  dependsOn: string[];
  contentHash: string;
}

/**
 * Checks the header fields (problems are added to `problems`). An unknown pipeline is a 404 at
 * once: without it no payload can be checked. Returns the pipeline whenever it is known, so the
 * items can still be checked when other header fields are wrong (every problem in one answer).
 */
export async function checkHeader(
  env: SubmissionEnv,
  raw: Record<string, unknown>,
  problems: ProblemList,
): Promise<{ header: ResolvedHeader | null; pipeline: PipelineDefinition<unknown> | null }> {
  if (typeof raw.pipeline === "string" && raw.pipeline.length > 0 && !getPipeline(raw.pipeline)) {
    throw new TallyError(
      404,
      "not_found",
      `unknown pipeline "${raw.pipeline}"; known pipelines: ${pipelineNames().join(", ")}`,
      [{ path: "pipeline", problem: "no pipeline with this name" }],
    );
  }
  const parsed = ndjsonHeaderSchema.safeParse(raw);
  const pipeline = typeof raw.pipeline === "string" ? (getPipeline(raw.pipeline) ?? null) : null;
  if (!parsed.success) {
    problems.addAll("invalid", zodProblems(parsed.error));
    return { header: null, pipeline };
  }
  const h = parsed.data;
  const dependsOn = h.dependsOn ?? [];
  const before = problems.total;
  const seen = new Set<string>();
  dependsOn.forEach((id, i) => {
    if (seen.has(id)) problems.add("invalid", `dependsOn[${i}]`, `"${id}" is listed twice`);
    seen.add(id);
  });
  if (problems.total === before && dependsOn.length > 0) {
    // Dependencies must exist first, which also makes a cycle impossible by construction.
    const found = await env.deps.ledger.getBatches(dependsOn);
    found.forEach((b, i) => {
      if (!b) problems.add("invalid", `dependsOn[${i}]`, `no batch "${dependsOn[i]}" exists`);
    });
  }
  if (problems.total > before || !pipeline) return { header: null, pipeline };
  const failureThreshold = h.failureThreshold ?? defaultFailureThreshold;
  return {
    pipeline,
    header: {
      batchId: h.id ?? env.settings.newBatchId(),
      generatedId: h.id === undefined,
      pipeline,
      failureThreshold,
      dependsOn,
      contentHash: batchContentHash({ pipeline: pipeline.name, failureThreshold, dependsOn }),
    },
  };
}

/** Creates the batch, or returns the stored one with the same id and header; a different header is a 409. */
export async function createOrFindBatch(
  env: SubmissionEnv,
  header: ResolvedHeader,
  total: number | null,
  format: "json" | "ndjson" | "open",
): Promise<{ kind: "created" | "exists"; batch: Batch }> {
  const { ledger, clock } = env.deps;
  const r = await ledger.createBatch(
    {
      batchId: header.batchId,
      pipeline: header.pipeline.name,
      failureThreshold: header.failureThreshold,
      dependsOn: header.dependsOn,
      contentHash: header.contentHash,
      total,
    },
    clock.now(),
  );
  const log = env.log;
  if (r.kind === "conflict") {
    const b = r.batch;
    const details = [];
    if (b.pipeline !== header.pipeline.name)
      details.push({ path: "pipeline", problem: `the stored batch uses "${b.pipeline}"` });
    if (b.failureThreshold !== header.failureThreshold)
      details.push({ path: "failureThreshold", problem: `the stored batch has ${b.failureThreshold}` });
    if ([...b.dependsOn].sort().join("\n") !== [...header.dependsOn].sort().join("\n"))
      details.push({ path: "dependsOn", problem: `the stored batch depends on [${b.dependsOn.join(", ")}]` });
    log.info("batch.submission_conflict", `batch ${b.batchId} exists with a different header`, {
      batchId: b.batchId,
      fields: details.map((d) => d.path),
    });
    throw conflict(`batch "${b.batchId}" already exists with different content`, details);
  }
  if (r.kind === "created") {
    log.info("batch.created", `batch ${header.batchId} created (${r.batch.status})`, {
      batchId: header.batchId,
      pipeline: header.pipeline.name,
      status: r.batch.status,
      format,
      total,
      failureThreshold: header.failureThreshold,
      dependsOn: header.dependsOn,
    });
  } else {
    log.info("batch.resubmitted", `batch ${header.batchId} re-submitted (stored: ${r.batch.status})`, {
      batchId: header.batchId,
      status: r.batch.status,
      format,
      received: r.batch.received,
      cursor: r.batch.cursor,
    });
  }
  return { kind: r.kind, batch: r.batch };
}
