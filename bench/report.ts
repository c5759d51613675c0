// The benchmark report: bench/results/latest.json (everything measured, machine facts included)
// and bench/results/latest.md (the summary table and one section per phase, with its conditions).
// Also the final table printed at the end of a run.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CapacityModel, renderCapacityModel } from "./capacityModel";
import type { CostModel } from "./costModel";
import type { EndToEndRun } from "./endToEnd";
import type { OpCounts, OpsPerItemResult } from "./opsPerItem";
import type { PeerResult } from "./peerBullmq";
import type { RecoveryResult } from "./recovery";
import type { ScalingResult } from "./scaling";
import type { SubmissionResult } from "./submission";
import type { MachineFacts } from "./support/machine";
import { fmt, fmtDist } from "./support/stats";

export type PhaseName = "submission" | "ops" | "e2e" | "recovery" | "scaling" | "peer";
export const phaseNames: PhaseName[] = ["submission", "ops", "e2e", "recovery", "scaling", "peer"];

export interface PhaseOutcome<T> {
  status: "ok" | "failed" | "skipped";
  durationMs: number;
  error?: string;
  result?: T;
}

export interface BenchReport {
  mode: "quick" | "full";
  machine: MachineFacts;
  settings: Record<string, unknown>;
  phases: {
    submission: PhaseOutcome<SubmissionResult>;
    ops: PhaseOutcome<OpsPerItemResult & { cost: CostModel }>;
    e2e: PhaseOutcome<{ runs: EndToEndRun[]; notes: string[] }>;
    recovery: PhaseOutcome<RecoveryResult>;
    scaling: PhaseOutcome<ScalingResult>;
    peer: PhaseOutcome<PeerResult>;
  };
  /** Production ceilings modelled from the declared Firestore layout (not measured; issue #16). */
  capacity?: CapacityModel;
  totalMs: number;
}

interface Row {
  figure: string;
  tally: string;
  baseline: string;
  ratio: string;
  target: string;
  met: string;
}

const yes = (b: boolean | null) => (b === null ? "—" : b ? "yes" : "**no**");
const usd = (v: number) => `$${v < 1 ? v.toFixed(3) : v.toFixed(2)}`;

export function summaryRows(r: BenchReport): Row[] {
  const rows: Row[] = [];
  const p = r.phases;
  const failed = (name: string, o: PhaseOutcome<unknown>) => {
    if (o.status !== "ok")
      rows.push({
        figure: name,
        tally: o.status === "failed" ? `failed: ${o.error?.split("\n")[0]}` : "skipped",
        baseline: "",
        ratio: "",
        target: "",
        met: "—",
      });
    return o.status !== "ok";
  };
  if (!failed("Submission", p.submission)) {
    for (const s of p.submission.result!.sizes) {
      rows.push({
        figure: `Submission, ${fmt(s.items)} items (items/s)`,
        tally: fmt(s.tally.itemsPerSecond),
        baseline: `${fmt(s.raw.itemsPerSecond)} raw`,
        ratio: s.ratio.toFixed(2),
        target: "≥ 0.8",
        met: yes(s.ratio >= 0.8),
      });
    }
    const sizes = p.submission.result!.sizes;
    for (const s of sizes)
      rows.push({
        figure: `Coordinator peak RSS, ${fmt(s.items)} items`,
        tally: `${fmt(s.tally.peakRssMiB, 1)} MiB`,
        baseline: `idle ${fmt(s.tally.idleRssMiB, 1)} MiB`,
        ratio: "",
        target: "≤ 200 MB, flat",
        met: yes(s.tally.peakRssMiB !== null && s.tally.peakRssMiB * 1.048576 <= 200),
      });
    for (const f of p.submission.result!.failures ?? [])
      rows.push({
        figure: "Submission",
        tally: `failed: ${f.split("\n")[0]}`,
        baseline: "",
        ratio: "",
        target: "",
        met: "—",
      });
    const capped = p.submission.result!.heapCapped;
    if (capped)
      rows.push({
        figure: `Coordinator peak RSS, ${fmt(capped.items)} items, ${capped.nodeOptions}`,
        tally: `${fmt(capped.tally.peakRssMiB, 1)} MiB (${fmt(capped.tally.itemsPerSecond)} items/s)`,
        baseline: `idle ${fmt(capped.tally.idleRssMiB, 1)} MiB`,
        ratio: "",
        target: "≤ 200 MB",
        met: yes(capped.tally.peakRssMiB !== null && capped.tally.peakRssMiB * 1.048576 <= 200),
      });
  }
  if (!failed("End to end", p.e2e)) {
    for (const run of p.e2e.result!.runs)
      rows.push({
        figure: `End to end, no-op, ${run.workers} worker(s), ${fmt(run.items)} items (items/s)`,
        tally: fmt(run.tally.itemsPerSecond, 1),
        baseline: `${fmt(run.raw.itemsPerSecond, 1)} raw op mix`,
        ratio: run.ratio.toFixed(2),
        target: "≥ 0.7",
        met: yes(run.ratio >= 0.7),
      });
  }
  if (!failed("Operations per item", p.ops)) {
    const o = p.ops.result!;
    for (const t of o.targets)
      rows.push({
        figure: `${t.name}${o.deterministic ? "" : " (NOT deterministic)"}`,
        tally: fmt(t.value, Number.isInteger(t.value) ? 0 : 2),
        baseline: "",
        ratio: "",
        target: t.target,
        met: yes(t.met),
      });
    const c = o.cost;
    rows.push({
      figure: `Cost per ${fmt(c.items)} items (orchestration)`,
      tally: usd(c.tally.totalUsd),
      baseline: c.peers.map((x) => `${x.name.split(" (")[0]} ${usd(x.totalUsd)}`).join("; "),
      ratio: "",
      target: "—",
      met: "—",
    });
  }
  if (!failed("Recovery", p.recovery)) {
    const rec = p.recovery.result!;
    rows.push({
      figure: `Killed worker → item back in play (lease ${rec.leaseSeconds} s, tick ${rec.tickSeconds} s)`,
      tally: fmtDist(rec.backInPlay),
      baseline: "",
      ratio: "",
      target: `≤ ${fmt(rec.boundMs)} ms (lease + tick)`,
      met: yes(rec.withinBound === rec.kills.length),
    });
    rows.push({
      figure: "Killed worker → item completed",
      tally: fmtDist(rec.completed),
      baseline: "",
      ratio: "",
      target: `+ item sleep ${rec.itemSleepMs} ms`,
      met: "—",
    });
    rows.push({
      figure: "Last item terminal → batch finalized",
      tally: fmtDist(rec.finalization.latency),
      baseline: "",
      ratio: "",
      target: "≤ 2,000 ms",
      met: yes(rec.finalization.latency.max <= 2000),
    });
  }
  if (!failed("Scaling", p.scaling)) {
    const sc = p.scaling.result!;
    const [a, b] = [sc.points[0]!, sc.points[sc.points.length - 1]!];
    rows.push({
      figure: `Deliveries/s at backlog ${fmt(b.backlog)} vs ${fmt(a.backlog)}`,
      tally: `${fmt(b.tally.deliveriesPerSecond, 1)} vs ${fmt(a.tally.deliveriesPerSecond, 1)}`,
      baseline:
        a.raw && b.raw
          ? `raw op mix ${fmt(b.raw.deliveriesPerSecond, 1)} vs ${fmt(a.raw.deliveriesPerSecond, 1)} (ratio ${sc.rawRatio?.toFixed(2)}); emulator existence query p50 ${fmt(b.existenceQueryMs.p50)} vs ${fmt(a.existenceQueryMs.p50)} ms`
          : "",
      ratio: sc.ratio.toFixed(2),
      target: "≈ 1 (≥ 0.8)",
      met: yes(sc.ratio >= 0.8),
    });
  }
  if (!failed("Peer (BullMQ)", p.peer)) {
    const pe = p.peer.result!;
    rows.push({
      figure: `Fan-out of ${fmt(pe.items)} no-op items, ${pe.workers} workers (items/s)`,
      tally: fmt(pe.fanOut.tally.itemsPerSecond, 1),
      baseline: `${fmt(pe.fanOut.bullmq.itemsPerSecond, 1)} BullMQ`,
      ratio: pe.fanOut.tallyOverBullmq.toFixed(3),
      target: "reported",
      met: "—",
    });
    const f = (x: PeerResult["fault"]["tally"] | PeerResult["fault"]["bullmq"]) =>
      `in flight at the kill ${x.inFlightAtKill}: lost ${x.lost}, twice-recorded ${x.duplicateResults}, unaccounted ${x.unaccounted}, re-executed ${x.reExecuted}, finished ${x.batchFinished ? "yes" : "no"}`;
    rows.push({
      figure: "Worker SIGKILLed mid-batch",
      tally: f(pe.fault.tally),
      baseline: `BullMQ: ${f(pe.fault.bullmq)}`,
      ratio: "",
      target: "0 lost, 0 twice, 0 unaccounted",
      met: yes(
        pe.fault.tally.lost === 0 &&
          pe.fault.tally.duplicateResults === 0 &&
          pe.fault.tally.unaccounted === 0,
      ),
    });
  }
  return rows;
}

export function markdownTable(rows: Row[]): string {
  const head = "| Figure | Tally | Baseline / peer | Ratio | Target | Met |\n|---|---|---|---|---|---|";
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  return [
    head,
    ...rows.map(
      (r) => `| ${[r.figure, r.tally, r.baseline, r.ratio, r.target, r.met].map(esc).join(" | ")} |`,
    ),
  ].join("\n");
}

const opsLine = (o: OpCounts) =>
  `${o.reads} reads, ${o.writes} writes, ${o.transactions} transactions, ${o.queries} queries, ${o.aggregations} count() aggregations, ${o.published} publishes, ${o.deliveries} deliveries, ${o.sinkOperations} sink operations`;

export function renderMarkdown(r: BenchReport): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# Tally benchmark report (${r.mode})`);
  out.push("");
  out.push(`- Date: ${m.date}`);
  out.push(`- Command: \`${m.command}\``);
  out.push(
    `- Machine: ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB memory, ${m.platform}, Node ${m.node}, ${m.javaVersion ?? "java ?"}, Google Cloud SDK ${m.gcloudVersion ?? "?"}`,
  );
  out.push(
    `- Load: ${(m.backgroundBusyBefore * 100).toFixed(0)}% of all cores busy in a 2 s sample before the bench started; load average at start ${m.loadAverageAtStart.join(" / ")}, at end ${(m.loadAverageAtEnd ?? []).join(" / ")}`,
  );
  out.push(`- Note: ${m.emulatorNote}.`);
  out.push(`- Total time: ${fmt(r.totalMs / 1000, 0)} s`);
  out.push("");
  out.push("## Summary");
  out.push("");
  out.push(markdownTable(summaryRows(r)));
  out.push("");

  const p = r.phases;
  const section = (title: string, o: PhaseOutcome<unknown>, body: () => string[]) => {
    out.push(`## ${title}`);
    out.push("");
    out.push(`Phase ${o.status} in ${fmt(o.durationMs / 1000, 1)} s.`);
    if (o.error) out.push("", "```", o.error, "```");
    if (o.status === "ok") out.push("", ...body());
    out.push("");
  };
  section("1. Submission", p.submission, () => {
    const s = p.submission.result!;
    return [
      "| Items | Tally items/s | Raw limit items/s | Ratio | BulkWriter ms | WriteBatch×500 ms | Publish ms | Sequential ms | Overlapped ms | Coordinator peak RSS | Idle RSS | Coordinator CPU µs/item |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      ...s.sizes.map(
        (x) =>
          `| ${fmt(x.items)} | ${fmt(x.tally.itemsPerSecond)} | ${fmt(x.raw.itemsPerSecond)} | ${x.ratio.toFixed(2)} | ${fmt(x.raw.bulkWriterMs)} | ${fmt(x.raw.writeBatchMs)} | ${fmt(x.raw.publishMs)} | ${fmt(x.raw.sequentialMs)} | ${fmt(x.raw.overlappedMs)} | ${fmt(x.tally.peakRssMiB, 1)} MiB | ${fmt(x.tally.idleRssMiB, 1)} MiB | ${fmt(x.tally.cpuSecondsPerItem === null ? null : x.tally.cpuSecondsPerItem * 1e6)} |`,
      ),
      "",
      ...s.sizes.map(
        (x) =>
          `- ${fmt(x.items)} items, the coordinator's own timings: ${JSON.stringify(x.tally.coordinatorTimings)}`,
      ),
      ...(s.heapCapped
        ? [
            `- Memory experiment, ${fmt(s.heapCapped.items)} items with ${s.heapCapped.nodeOptions}: ${fmt(s.heapCapped.tally.itemsPerSecond)} items/s, coordinator peak RSS ${fmt(s.heapCapped.tally.peakRssMiB, 1)} MiB (idle ${fmt(s.heapCapped.tally.idleRssMiB, 1)} MiB), CPU ${fmt(s.heapCapped.tally.cpuSecondsPerItem === null ? null : s.heapCapped.tally.cpuSecondsPerItem * 1e6)} µs/item; its own timings: ${JSON.stringify(s.heapCapped.tally.coordinatorTimings)}`,
          ]
        : []),
      ...(s.failures ?? []).map((f) => `- **Failed**: ${f}`),
      ...s.notes.map((n) => `- ${n}`),
    ];
  });
  section("2. End to end (no-op pipeline)", p.e2e, () => {
    const e = p.e2e.result!;
    return [
      "| Workers | Items | Tally items/s | Raw op mix items/s | Ratio | Deliveries | Worker CPU ms/item |",
      "|---|---|---|---|---|---|---|",
      ...e.runs.map(
        (x) =>
          `| ${x.workers} | ${fmt(x.items)} | ${fmt(x.tally.itemsPerSecond, 1)} | ${fmt(x.raw.itemsPerSecond, 1)} | ${x.ratio.toFixed(2)} | ${fmt(x.tally.deliveries)} | ${fmt(x.tally.workerCpuSecondsPerItem * 1000, 1)} |`,
      ),
      "",
      ...e.notes.map((n) => `- ${n}`),
    ];
  });
  section("3. Operations per item and cost", p.ops, () => {
    const o = p.ops.result!;
    const c = o.cost;
    return [
      `Counted by the instrumented adapters; ${o.deterministic ? "every linearity check held (exact, deterministic)" : "**a linearity check failed**"}:`,
      "",
      `- per item: ${opsLine(o.perItem)}`,
      `  - coordinator: ${opsLine(o.perItemByComponent.coordinator)}`,
      `  - worker: ${opsLine(o.perItemByComponent.worker)}`,
      `- per batch (constant): ${opsLine(o.perBatch)}; plus at most one cursor write per second of submission`,
      `- per further ${o.chunkItems}-item submission chunk: ${opsLine(o.perChunk)}`,
      "",
      ...o.checks.map((x) => `- ${x}`),
      "",
      `Cost of one batch of ${fmt(c.items)} items (list prices read ${c.pricesReadOn}, bench/prices.ts):`,
      "",
      "| Line | Quantity | USD |",
      "|---|---|---|",
      ...c.tally.lines.map(
        (l) =>
          `| ${l.what}${l.assumption ? ` (${l.assumption})` : ""} | ${fmt(l.quantity)} ${l.unit} | ${usd(l.usd)} |`,
      ),
      `| **Tally total** | | **${usd(c.tally.totalUsd)}** |`,
      ...c.shared.map((l) => `| ${l.what} | ${fmt(l.quantity)} ${l.unit} | ${usd(l.usd)} |`),
      "",
      "Orchestration fee of the alternatives for the same fan-out (their worker compute and worker requests excluded, as for Tally):",
      "",
      "| Alternative | Basis | USD |",
      "|---|---|---|",
      ...c.peers.map(
        (x) =>
          `| ${x.name} | ${x.lines.map((l) => `${fmt(l.quantity)} ${l.unit}${l.assumption ? ` (${l.assumption})` : ""}`).join("; ")} | ${usd(x.totalUsd)} |`,
      ),
      "",
      "Prices not verified against the provider's own table in this session (figures as widely published; check before quoting):",
      "",
      ...c.unverifiedPrices.map((x) => `- ${x}`),
    ];
  });
  section("4. Recovery latency", p.recovery, () => {
    const rec = p.recovery.result!;
    return [
      `Lease ${rec.leaseSeconds} s, reconciler tick ${rec.tickSeconds} s, bound lease + tick = ${fmt(rec.boundMs)} ms; ${rec.withinBound}/${rec.kills.length} kills back in play within it.`,
      "",
      `- killed worker → back in play: ${fmtDist(rec.backInPlay)}`,
      `- killed worker → completed: ${fmtDist(rec.completed)}`,
      `- last item terminal → batch finalized (${rec.finalization.batches} batches of ${rec.finalization.itemsPerBatch}): ${fmtDist(rec.finalization.latency)}`,
      `- reconciler calls during the kills: ${fmtDist(rec.reconcileCall)}`,
      "",
      ...rec.notes.map((n) => `- ${n}`),
    ];
  });
  section("5. Scaling", p.scaling, () => {
    const sc = p.scaling.result!;
    return [
      "| Backlog | Submit ms | Tally deliveries (window ms) | Tally deliveries/s | Raw op mix deliveries/s | Existence query on the emulator | Document read |",
      "|---|---|---|---|---|---|---|",
      ...sc.points.map(
        (x) =>
          `| ${fmt(x.backlog)} | ${fmt(x.submitMs)} | ${fmt(x.tally.deliveries)} (${fmt(x.tally.windowMs)}) | ${fmt(x.tally.deliveriesPerSecond, 1)} | ${fmt(x.raw?.deliveriesPerSecond ?? null, 1)} | ${fmtDist(x.existenceQueryMs)} | ${fmtDist(x.documentReadMs)} |`,
      ),
      "",
      `Ratio (largest ÷ smallest backlog): Tally ${sc.ratio.toFixed(2)}, raw op mix ${sc.rawRatio?.toFixed(2) ?? "—"}.`,
      "",
      ...sc.notes.map((n) => `- ${n}`),
    ];
  });
  section("6. Peer: BullMQ Flows", p.peer, () => {
    const pe = p.peer.result!;
    const acct = (name: string, x: PeerResult["fault"]["tally"] | PeerResult["fault"]["bullmq"]) =>
      `| ${name} | ${fmt(x.inFlightAtKill)} | ${fmt(x.completed)} | ${fmt(x.failed)} | ${fmt(x.lost)} | ${fmt(x.unaccounted)} | ${fmt(x.reExecuted)} | ${fmt(x.duplicateResults)} | ${x.batchFinished ? "yes" : "no"} | ${x.recoveryMs === null ? "—" : fmt(x.recoveryMs)} |`;
    return [
      `${fmt(pe.items)} no-op items, ${pe.workers} worker processes each. ${pe.redisVersion}.`,
      "",
      "| System | Items/s (submit → all done) | ms |",
      "|---|---|---|",
      `| Tally | ${fmt(pe.fanOut.tally.itemsPerSecond, 1)} | ${fmt(pe.fanOut.tally.ms)} |`,
      `| BullMQ | ${fmt(pe.fanOut.bullmq.itemsPerSecond, 1)} | ${fmt(pe.fanOut.bullmq.ms)} |`,
      "",
      `Tally ÷ BullMQ: ${pe.fanOut.tallyOverBullmq.toFixed(3)}.`,
      "",
      `Fault: one worker SIGKILLed after 30% of the items, a new one started; deadline ${fmt(pe.fault.deadlineMs)} ms after the kill.`,
      "",
      "| System | In flight at the kill | Completed | Failed | Lost | Unaccounted | Re-executed | Duplicate results | Batch finished | Kill → finished ms |",
      "|---|---|---|---|---|---|---|---|---|---|",
      acct("Tally", pe.fault.tally),
      acct("BullMQ", pe.fault.bullmq),
      "",
      ...pe.notes.map((n) => `- ${n}`),
    ];
  });
  if (r.capacity) {
    out.push("## 7. Capacity model (production Firestore, modelled, not measured)");
    out.push("");
    out.push(renderCapacityModel(r.capacity));
    out.push("");
  }
  out.push("## Settings");
  out.push("");
  out.push("```json", JSON.stringify(r.settings, null, 2), "```", "");
  return out.join("\n");
}

export function writeReport(r: BenchReport, dir: string): { md: string; json: string } {
  mkdirSync(dir, { recursive: true });
  const md = join(dir, "latest.md");
  const json = join(dir, "latest.json");
  writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(md, `${renderMarkdown(r)}\n`);
  return { md, json };
}
