// Shared by the > 32 MiB submission tests: the coordinator as deployed (served by the Functions
// Framework, which buffers every body) behind a front that refuses requests over 32 MiB as Cloud
// Run does, and a typed-client submission stopped half-way and resumed.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import { expect } from "vitest";
import type { Ledger } from "../../../functions/core/ports";
import { createCoordinatorHandler } from "../../../functions/handlers/coordinator";
import type { CoordinatorOptions } from "../../../functions/handlers/coordinator/coordinatorOptions";
import type { HandlerDeps } from "../../../functions/runtime";
import {
  type SubmitProgress,
  type SubmitResult,
  TallyClient,
  type TallyClientOptions,
} from "../../../local/client/tallyClient";
import { type CloudRunFront, cloudRunMaxRequestBytes, startCloudRunFront } from "./cloudRunFront";

let served = 0;
/** The coordinator under the Functions Framework on a loopback port, behind a Cloud-Run-like front. */
export async function serveCoordinatorBehindFront(
  deps: HandlerDeps,
  opts: CoordinatorOptions = {},
): Promise<{ front: CloudRunFront; close(): Promise<void> }> {
  const name = `big-coordinator-${process.pid}-${++served}`;
  http(name, createCoordinatorHandler(deps, opts));
  const framework: Server = getTestServer(name);
  await new Promise<void>((resolve) => framework.listen(0, "127.0.0.1", resolve));
  const front = await startCloudRunFront(`http://127.0.0.1:${(framework.address() as AddressInfo).port}`);
  return {
    front,
    close: async () => {
      await front.close();
      framework.closeAllConnections();
      await new Promise<void>((resolve) => framework.close(() => resolve()));
    },
  };
}

/**
 * Submits `source()` (n items) with the typed client, aborts the append in flight once half is
 * stored, checks what the interruption left (still `submitting`, a stored prefix from n/2 to below
 * n, progress reported and never backwards), then resumes with a new client from the stored prefix.
 */
export async function submitInterruptedThenResumed(args: {
  frontUrl: string;
  ledger: Ledger;
  header: { id: string; pipeline: string };
  source: () => Iterable<{ payload: unknown }>;
  n: number;
  client?: Omit<TallyClientOptions, "baseUrl">;
}): Promise<{ half: number; seen: SubmitProgress[]; resumed: SubmitResult }> {
  const { frontUrl, ledger, header, source, n } = args;
  const stop = new AbortController();
  const seen: SubmitProgress[] = [];
  const first = new TallyClient({ baseUrl: frontUrl, ...args.client }).submit(header, source(), {
    signal: stop.signal,
    onProgress: (p) => {
      seen.push(p);
      if (p.stored >= n / 2 && !stop.signal.aborted)
        setTimeout(() => stop.abort(new Error("interrupted")), 20);
    },
  });
  await expect(first).rejects.toThrow("interrupted");
  const interrupted = await ledger.getBatch(header.id);
  expect(interrupted).toMatchObject({ status: "submitting", submissionComplete: false });
  const half = interrupted!.received;
  expect(half).toBeGreaterThanOrEqual(n / 2);
  expect(half).toBeLessThan(n);
  expect(seen.length).toBeGreaterThan(1);
  expect(seen.every((p, i) => i === 0 || p.stored >= seen[i - 1]!.stored)).toBe(true);
  console.log(`interrupted at ${half} of ${n} items stored`);

  // Resumed: a new run reads the source again, skips the stored prefix, appends the rest, seals.
  const resumed = await new TallyClient({ baseUrl: frontUrl, ...args.client }).submit(header, source(), {
    resume: true,
  });
  expect(resumed).toMatchObject({ created: false, items: n });
  expect(resumed.resumedAt).toBeGreaterThanOrEqual(half);
  expect(resumed.batch.progress).toMatchObject({ received: n, submissionComplete: true });
  return { half, seen, resumed };
}

/** The whole batch as one JSON request: refused by the front (413), the coordinator never sees it. */
export async function expectRefusedAsOneRequest(
  front: CloudRunFront,
  ledger: Ledger,
  batch: { id: string; pipeline: string; items: unknown[] },
): Promise<number> {
  const whole = JSON.stringify(batch);
  const bytes = Buffer.byteLength(whole);
  expect(bytes).toBeGreaterThan(cloudRunMaxRequestBytes);
  const refused = await fetch(`${front.url}/v1/batches`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: whole,
  });
  expect(refused.status).toBe(413);
  expect(front.stats.refused).toBe(1);
  expect(await ledger.getBatch(batch.id)).toBeNull();
  return bytes;
}
