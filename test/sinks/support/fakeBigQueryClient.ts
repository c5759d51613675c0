// FakeBigQueryClient — the one fake in the test suite (BigQuery has no local emulator). It stands in
// for the BigQueryJobsClient surface the BigQuery sink calls, and models exactly the BigQuery
// behaviour the sink's idempotency rests on:
//   - job ids are unique per project: inserting an existing id fails with 409 "Already Exists";
//   - a load job is atomic: it appends all its rows when it succeeds, none when it fails;
//   - a job goes PENDING/RUNNING → DONE, with or without an errorResult, and never changes after DONE.
// It records every request and the NDJSON it was given, so tests assert what the sink sends.
// Its `query` understands only the two queries the sink issues (count and read rows of a batch).
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import type {
  BigQueryJobsClient,
  JobSnapshot,
  LoadJobRequest,
} from "../../../functions/adapters/bigqueryResultSink";

/** What the next inserted job does. */
export type FakeJobOutcome =
  | { kind: "succeed" }
  /** Fails when DONE: writes nothing. */
  | { kind: "fail"; reason: string; message: string }
  /** Stays RUNNING for this many getJob polls, then succeeds. */
  | { kind: "run"; polls: number };

interface FakeJob {
  request: LoadJobRequest | null;
  lines: Record<string, unknown>[];
  state: JobSnapshot["state"];
  errorResult: JobSnapshot["errorResult"];
  pollsLeft: number;
  outputRows: number;
}

export class FakeBigQueryApiError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export class FakeBigQueryClient implements BigQueryJobsClient {
  readonly inserted: { request: LoadJobRequest; lines: Record<string, unknown>[] }[] = [];
  readonly queries: { sql: string; params: Record<string, string | number>; location: string }[] = [];
  readonly jobLookups: string[] = [];
  /** Rows in the destination table, in load order. */
  readonly tableRows: Record<string, unknown>[] = [];
  private readonly jobs = new Map<string, FakeJob>();
  private readonly outcomes: FakeJobOutcome[] = [];
  /** Called right after a getJob lookup finds nothing — lets a test slip a racing insert in. */
  afterMissingLookup: ((jobId: string) => void) | null = null;
  tableExists = true;

  /** Scripts the outcomes of the next inserted jobs (default: succeed). */
  willRun(...outcomes: FakeJobOutcome[]): void {
    this.outcomes.push(...outcomes);
  }

  /** A job someone else created (another finalizer), with its rows when it succeeds. */
  seedJob(
    jobId: string,
    lines: Record<string, unknown>[],
    outcome: FakeJobOutcome = { kind: "succeed" },
  ): void {
    this.createJob(jobId, null, lines, outcome);
  }

  async insertLoadJob(request: LoadJobRequest, ndjsonGzipFile: string): Promise<void> {
    const jobId = request.jobReference.jobId;
    const text = gunzipSync(readFileSync(ndjsonGzipFile)).toString("utf8");
    const lines = text
      .split("\n")
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    if (this.jobs.has(jobId))
      throw new FakeBigQueryApiError(409, `Already Exists: Job ${request.jobReference.projectId}:${jobId}`);
    this.inserted.push({ request, lines });
    const outcome: FakeJobOutcome = !this.tableExists
      ? {
          kind: "fail",
          reason: "notFound",
          message: `Not found: Table ${request.configuration.load.destinationTable.tableId}`,
        }
      : (this.outcomes.shift() ?? { kind: "succeed" });
    this.createJob(jobId, request, lines, outcome);
  }

  async getJob(jobId: string, _location: string): Promise<JobSnapshot | null> {
    this.jobLookups.push(jobId);
    const job = this.jobs.get(jobId);
    if (!job) {
      this.afterMissingLookup?.(jobId);
      return null;
    }
    if (job.state !== "DONE") {
      if (job.pollsLeft > 0) job.pollsLeft--;
      else this.finish(job);
    }
    return { jobId, state: job.state, errorResult: job.errorResult, outputRows: job.outputRows };
  }

  async query(sql: string, params: Record<string, string | number>, location: string) {
    this.queries.push({ sql, params, location });
    if (!this.tableExists) throw new FakeBigQueryApiError(404, "Not found: Table fake:dataset.item_results");
    const rows = this.tableRows.filter((r) => r.batch_id === params.batchId);
    if (/^SELECT COUNT\(\*\) AS n\b/.test(sql)) return [{ n: rows.length }];
    if (/^SELECT batch_id, item_id, generation, TO_JSON_STRING\(result\)/.test(sql))
      return [...rows]
        .sort((a, b) => String(a.item_id).localeCompare(String(b.item_id)))
        .map((r) => ({
          batch_id: r.batch_id,
          item_id: r.item_id,
          generation: r.generation,
          result: r.result === null ? null : JSON.stringify(r.result),
          finished_at_ms: Date.parse(String(r.finished_at)),
          attempts: r.attempts,
        }));
    throw new Error(`FakeBigQueryClient does not understand this query: ${sql}`);
  }

  private createJob(
    jobId: string,
    request: LoadJobRequest | null,
    lines: Record<string, unknown>[],
    outcome: FakeJobOutcome,
  ): void {
    const job: FakeJob = {
      request,
      lines,
      state: outcome.kind === "run" ? "RUNNING" : "PENDING",
      errorResult: null,
      pollsLeft: outcome.kind === "run" ? outcome.polls : 0,
      outputRows: 0,
    };
    if (outcome.kind === "fail") job.errorResult = { reason: outcome.reason, message: outcome.message };
    this.jobs.set(jobId, job);
  }

  private finish(job: FakeJob): void {
    job.state = "DONE";
    if (job.errorResult) return;
    this.tableRows.push(...job.lines);
    job.outputRows = job.lines.length;
  }
}
