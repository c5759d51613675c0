// FakeBigQueryClient — the one fake in the test suite (BigQuery has no local emulator). It stands in
// for the BigQueryJobsClient surface the BigQuery sink calls, and models exactly the BigQuery
// behaviour the sink's idempotency rests on:
//   - job ids are unique per project: inserting an existing id fails with 409 "Already Exists";
//   - a load job is atomic: it appends all its rows when it succeeds, none when it fails;
//   - a job goes PENDING/RUNNING → DONE, with or without an errorResult, and never changes after DONE.
//   - a caller is an identity with project-level permissions: jobs.insert and queries need
//     bigquery.jobs.create; jobs.get on a job *another* identity created needs bigquery.jobs.get,
//     while the creator reads its own job with bigquery.jobs.create alone
//     (https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/get). Refusals are 403s with
//     BigQuery's "Access Denied … does not have … permission" wording.
// It records every request and the NDJSON it was given, so tests assert what the sink sends.
// Its `query` understands only the two queries the sink issues (count and read rows of a batch).
// `as(identity)` gives another caller on the same project (same jobs, same table): two finalizers.
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import {
  type BigQueryJobsClient,
  bigqueryExportPermissions,
  type JobSnapshot,
  type LoadJobRequest,
} from "../../../functions/adapters/bigqueryResultSink";

/** Who calls BigQuery, and the permissions it holds on the project. */
export interface FakeIdentity {
  email: string;
  permissions: readonly string[];
}

/** The default caller holds what infra grants the exporting identities (the exporter custom role). */
export const defaultFakeIdentity: FakeIdentity = {
  email: "tally-finalizer@tally-test.iam.gserviceaccount.com",
  permissions: bigqueryExportPermissions,
};
/** Who created the jobs seeded with seedJob unless told otherwise: another finalizer. */
export const otherFinalizerEmail = "tally-other-finalizer@tally-test.iam.gserviceaccount.com";

/** What the next inserted job does. */
export type FakeJobOutcome =
  | { kind: "succeed" }
  /** Fails when DONE: writes nothing. */
  | { kind: "fail"; reason: string; message: string }
  /** Stays RUNNING for this many getJob polls, then succeeds. */
  | { kind: "run"; polls: number };

interface FakeJob {
  creator: string;
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

/** The project's BigQuery as every caller sees it. */
class FakeProject {
  readonly inserted: { request: LoadJobRequest; lines: Record<string, unknown>[]; by: string }[] = [];
  readonly queries: { sql: string; params: Record<string, string | number>; location: string }[] = [];
  readonly jobLookups: string[] = [];
  readonly tableRows: Record<string, unknown>[] = [];
  readonly jobs = new Map<string, FakeJob>();
  readonly outcomes: FakeJobOutcome[] = [];
  afterMissingLookup: ((jobId: string) => void) | null = null;
  tableExists = true;
}

export class FakeBigQueryClient implements BigQueryJobsClient {
  private readonly project: FakeProject;
  readonly identity: FakeIdentity;

  constructor(identity: FakeIdentity = defaultFakeIdentity, project: FakeProject = new FakeProject()) {
    this.identity = identity;
    this.project = project;
  }

  /** Another caller (identity) on the same project: same jobs, same table, same records. */
  as(identity: FakeIdentity): FakeBigQueryClient {
    return new FakeBigQueryClient(identity, this.project);
  }

  get inserted(): { request: LoadJobRequest; lines: Record<string, unknown>[]; by: string }[] {
    return this.project.inserted;
  }
  get queries(): { sql: string; params: Record<string, string | number>; location: string }[] {
    return this.project.queries;
  }
  get jobLookups(): string[] {
    return this.project.jobLookups;
  }
  /** Rows in the destination table, in load order. */
  get tableRows(): Record<string, unknown>[] {
    return this.project.tableRows;
  }
  /** Called right after a getJob lookup finds nothing — lets a test slip a racing insert in. */
  get afterMissingLookup(): ((jobId: string) => void) | null {
    return this.project.afterMissingLookup;
  }
  set afterMissingLookup(f: ((jobId: string) => void) | null) {
    this.project.afterMissingLookup = f;
  }
  get tableExists(): boolean {
    return this.project.tableExists;
  }
  set tableExists(v: boolean) {
    this.project.tableExists = v;
  }

  /** Scripts the outcomes of the next inserted jobs (default: succeed). */
  willRun(...outcomes: FakeJobOutcome[]): void {
    this.project.outcomes.push(...outcomes);
  }

  /** A job someone else created (another finalizer, by default), with its rows when it succeeds. */
  seedJob(
    jobId: string,
    lines: Record<string, unknown>[],
    outcome: FakeJobOutcome = { kind: "succeed" },
    creator = otherFinalizerEmail,
  ): void {
    this.createJob(jobId, creator, null, lines, outcome);
  }

  /** Who created a job (undefined when none has this id). */
  creatorOf(jobId: string): string | undefined {
    return this.project.jobs.get(jobId)?.creator;
  }

  private requirePermission(permission: string, resource: string): void {
    if (!this.identity.permissions.includes(permission))
      throw new FakeBigQueryApiError(
        403,
        `Access Denied: ${resource}: User does not have ${permission} permission for ${resource}.`,
      );
  }

  async insertLoadJob(request: LoadJobRequest, ndjsonGzipFile: string): Promise<void> {
    const { projectId } = request.jobReference;
    this.requirePermission("bigquery.jobs.create", `Project ${projectId}`);
    const jobId = request.jobReference.jobId;
    const text = gunzipSync(readFileSync(ndjsonGzipFile)).toString("utf8");
    const lines = text
      .split("\n")
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    if (this.project.jobs.has(jobId))
      throw new FakeBigQueryApiError(409, `Already Exists: Job ${request.jobReference.projectId}:${jobId}`);
    this.project.inserted.push({ request, lines, by: this.identity.email });
    const outcome: FakeJobOutcome = !this.tableExists
      ? {
          kind: "fail",
          reason: "notFound",
          message: `Not found: Table ${request.configuration.load.destinationTable.tableId}`,
        }
      : (this.project.outcomes.shift() ?? { kind: "succeed" });
    this.createJob(jobId, this.identity.email, request, lines, outcome);
  }

  async getJob(jobId: string, location: string): Promise<JobSnapshot | null> {
    this.jobLookups.push(jobId);
    const job = this.project.jobs.get(jobId);
    if (!job) {
      this.afterMissingLookup?.(jobId);
      return null;
    }
    // A job's creator reads it with bigquery.jobs.create; anyone else needs bigquery.jobs.get.
    if (job.creator === this.identity.email) this.requirePermission("bigquery.jobs.create", `Job ${jobId}`);
    else this.requirePermission("bigquery.jobs.get", `Job ${location}.${jobId}`);
    if (job.state !== "DONE") {
      if (job.pollsLeft > 0) job.pollsLeft--;
      else this.finish(job);
    }
    return { jobId, state: job.state, errorResult: job.errorResult, outputRows: job.outputRows };
  }

  async query(sql: string, params: Record<string, string | number>, location: string) {
    this.requirePermission("bigquery.jobs.create", "Project (query job)");
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
    creator: string,
    request: LoadJobRequest | null,
    lines: Record<string, unknown>[],
    outcome: FakeJobOutcome,
  ): void {
    const job: FakeJob = {
      creator,
      request,
      lines,
      state: outcome.kind === "run" ? "RUNNING" : "PENDING",
      errorResult: null,
      pollsLeft: outcome.kind === "run" ? outcome.polls : 0,
      outputRows: 0,
    };
    if (outcome.kind === "fail") job.errorResult = { reason: outcome.reason, message: outcome.message };
    this.project.jobs.set(jobId, job);
  }

  private finish(job: FakeJob): void {
    job.state = "DONE";
    if (job.errorResult) return;
    this.tableRows.push(...job.lines);
    job.outputRows = job.lines.length;
  }
}
