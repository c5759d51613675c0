// `tally submit`: sends the batch with the typed client (local/client/tallyClient.ts: open, appends
// of bounded size, seal — works against the deployed coordinator at any size, memory bounded), with
// a progress line, then optionally watches the batch. `--resume` goes on from the items the batch
// already holds (an interrupted submit).
import { TallyApiError, TallyClient } from "../../client/tallyClient";
import { ApiError, HttpClient } from "../apiClient";
import type { Command } from "../args";
import { exitCodeFor, finalSummaryOf, toBatchView } from "../batchView";
import { type CliIo, println } from "../cliIo";
import { CoordinatorApi } from "../coordinatorApi";
import { renderOutcomeLine, SubmitProgressView } from "../progressBar";
import { demoSource, fileSource } from "../submitBody";
import { watchBatch } from "../watch";

export async function submitCommand(cmd: Extract<Command, { kind: "submit" }>, io: CliIo): Promise<number> {
  const flags = { pipeline: cmd.pipeline, id: cmd.id, threshold: cmd.threshold, dependsOn: cmd.dependsOn };
  const source =
    cmd.source.kind === "demo"
      ? demoSource(cmd.source, flags)
      : await fileSource(cmd.source.path, cmd.source.format, flags);
  // One quick request first: a coordinator that is not running is one clear line, not retries.
  await new HttpClient(cmd.url, "coordinator").request("GET", "/healthz", { timeoutMs: 10_000 });

  const client = new TallyClient({ baseUrl: cmd.url });
  const view = new SubmitProgressView(io.out, { env: io.env });
  let result: Awaited<ReturnType<TallyClient["submit"]>>;
  try {
    result = await client.submit(source.header, source.items(), {
      resume: cmd.resume,
      onProgress: (p) => view.update({ ...p, total: p.total ?? source.count }),
    });
  } catch (err) {
    view.finish();
    if (err instanceof TallyApiError) {
      const batch = err.batch
        ? [
            {
              path: "batch",
              problem: `${err.batch.id} is ${err.batch.status} and holds ${err.batch.received} items${
                err.batch.status === "submitting"
                  ? `: fix the source and run again with --id ${err.batch.id} --resume`
                  : ""
              }`,
            },
          ]
        : [];
      throw new ApiError(err.status, err.code, err.message, [...err.details, ...batch]);
    }
    throw err;
  }
  view.finish();
  const batch = toBatchView(result.batch);
  const items = result.items;
  println(
    io.out,
    result.created
      ? `batch ${batch.batchId} created: pipeline ${batch.pipeline}, ${items} items, ${batch.status}`
      : result.resumedAt > 0
        ? `batch ${batch.batchId} resumed at item ${result.resumedAt}: pipeline ${batch.pipeline}, ${items} items, ${batch.status}`
        : `batch ${batch.batchId} already exists with the same content: ${batch.status}`,
  );
  if (!cmd.watch) {
    println(
      io.out,
      `follow it: tally status ${batch.batchId} --watch   (dashboard: ${cmd.url}/batches/${encodeURIComponent(batch.batchId)})`,
    );
    return 0;
  }
  const api = new CoordinatorApi(cmd.url);
  const final = await watchBatch(api, batch.batchId, cmd.intervalMs, io);
  println(io.out, renderOutcomeLine(finalSummaryOf(final)));
  return exitCodeFor(final);
}
