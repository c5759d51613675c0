// Batches for the dashboard test, made through the Ledger port on the Firestore emulator the way a
// run makes them: create, append, publish cursor, mark submitted, then lease and complete or fail
// each item (with timestamps spread over the last minutes, so the completion chart has a shape),
// and finalize through the core's finalizeBatch with a real DuckDB sink.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DuckDBResultSink } from "../../functions/adapters/duckdbResultSink";
import type { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { settleBatch } from "../../functions/core/finalizeBatch";
import { createLogger } from "../../functions/core/logger";
import type { Batch, BatchCounts, ErrorKind } from "../../functions/core/model";
import type { ItemRef } from "../../functions/core/ports";

export interface FailureSpec {
  kind: ErrorKind;
  message: string;
  count: number;
}

export interface BatchSpec {
  batchId: string;
  pipeline?: string;
  items: number;
  succeed: number;
  failures?: FailureSpec[];
  /** Leased and left running. */
  running?: number;
  failureThreshold?: number;
  /** Finalize once every item is terminal (default true). */
  finalize?: boolean;
  /** How long ago the batch was created. */
  ageMs: number;
  /** Over how long its items finished (they end 2 s before now for a final batch). */
  spanMs: number;
}

export interface MadeBatch {
  spec: BatchSpec;
  batch: Batch;
  counts: BatchCounts;
}

async function mapLimited<T>(
  items: T[],
  limit: number,
  fn: (t: T, i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

export class LedgerFixture {
  private readonly dir = mkdtempSync(join(tmpdir(), "tally-dashboard-"));
  readonly sink = new DuckDBResultSink(join(this.dir, "results.duckdb"));
  private readonly log = createLogger({ component: "dashboard-test", sink: () => {} });

  constructor(readonly ledger: FirestoreLedger) {}

  refs(batchId: string, from: number, count: number): ItemRef[] {
    return Array.from({ length: count }, (_, i) => ({
      batchId,
      itemId: `item-${String(from + i + 1).padStart(4, "0")}`,
      generation: 1,
    }));
  }

  async make(spec: BatchSpec): Promise<MadeBatch> {
    const { ledger } = this;
    const now = Date.now();
    const created = now - spec.ageMs;
    const failures = spec.failures ?? [];
    const failCount = failures.reduce((a, f) => a + f.count, 0);
    const running = spec.running ?? 0;
    await ledger.createBatch(
      {
        batchId: spec.batchId,
        pipeline: spec.pipeline ?? "demo",
        failureThreshold: spec.failureThreshold ?? 0.05,
        dependsOn: [],
        contentHash: `fixture-${spec.batchId}`,
        total: spec.items,
      },
      created,
    );
    const refs = this.refs(spec.batchId, 0, spec.items);
    await ledger.appendItems(
      spec.batchId,
      0,
      refs.map((r, i) => ({ itemId: r.itemId, payload: { value: i + 1 } })),
      created,
      { publishable: true },
    );
    await ledger.advanceCursor(spec.batchId, spec.items, created + 200);
    await ledger.markSubmitted(spec.batchId, spec.items, created + 200);

    // Finish times ramp up then level off (a worker pool warming up): t = start + span·√(i/n).
    const finishing = spec.succeed + failCount;
    const start = created + 500;
    const finishAt = (i: number) =>
      Math.round(start + spec.spanMs * Math.sqrt((i + 1) / Math.max(1, finishing)));
    const plan: Array<{ ref: ItemRef; at: number; fail?: FailureSpec }> = [];
    let k = 0;
    const failQueue = failures.flatMap((f) => Array.from({ length: f.count }, () => f));
    // Spread failures evenly among the finishing items.
    const every = failCount > 0 ? finishing / failCount : Infinity;
    let nextFail = every / 2;
    for (let i = 0; i < finishing; i++) {
      const fail = i + 0.5 >= nextFail && failQueue.length > 0 ? failQueue.shift() : undefined;
      if (fail) nextFail += every;
      plan.push({ ref: refs[k++]!, at: finishAt(i), fail });
    }
    await mapLimited(plan, 8, async ({ ref, at, fail }) => {
      const leased = await ledger.leaseItem(ref, "fixture-worker", 600_000, 5, at - 300);
      if (leased.kind !== "leased") throw new Error(`could not lease ${ref.itemId}: ${leased.kind}`);
      const done = fail
        ? await ledger.failItem(ref, { kind: fail.kind, message: fail.message }, at, {
            owner: "fixture-worker",
          })
        : await ledger.completeItem(ref, "fixture-worker", { value: ref.itemId, ok: true }, at);
      if (done.kind !== "done") throw new Error(`could not finish ${ref.itemId}: ${done.reason}`);
    });
    await mapLimited(refs.slice(k, k + running), 8, async (ref) => {
      await ledger.leaseItem(ref, "fixture-worker", 600_000, 5, now);
    });

    if (spec.finalize ?? true) {
      // Finalized moments after its last item, as a worker would.
      const lastFinish = plan.length > 0 ? plan[plan.length - 1]!.at : created + 500;
      const clock = { now: () => Math.min(Date.now(), lastFinish + 700) };
      const finalized = await settleBatch(
        { ledger, sink: this.sink, clock, log: this.log, staleFinalizingMs: 60_000 },
        spec.batchId,
      );
      if (!finalized) throw new Error(`batch ${spec.batchId} did not finalize`);
    }
    const batch = (await ledger.getBatch(spec.batchId))!;
    return { spec, batch, counts: await ledger.countItems(spec.batchId) };
  }

  /** Completes the next pending item of a live batch (the live-refresh check). */
  async completeOne(batchId: string, seq: number): Promise<void> {
    const [ref] = this.refs(batchId, seq, 1);
    const leased = await this.ledger.leaseItem(ref!, "fixture-worker", 600_000, 5, Date.now());
    if (leased.kind !== "leased") throw new Error(`could not lease ${ref!.itemId}: ${leased.kind}`);
    await this.ledger.completeItem(ref!, "fixture-worker", { ok: true }, Date.now());
  }

  async close(): Promise<void> {
    await this.sink.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
