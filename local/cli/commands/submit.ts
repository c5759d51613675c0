// `tally submit`: builds the body (file or demo items), posts it, and optionally watches the batch.
import type { Command } from "../args";
import { exitCodeFor, finalSummaryOf } from "../batchView";
import { type CliIo, println } from "../cliIo";
import { CoordinatorApi } from "../coordinatorApi";
import { renderOutcomeLine } from "../progressBar";
import { demoRequest, fileRequest } from "../submitBody";
import { watchBatch } from "../watch";

export async function submitCommand(cmd: Extract<Command, { kind: "submit" }>, io: CliIo): Promise<number> {
  const flags = { pipeline: cmd.pipeline, id: cmd.id, threshold: cmd.threshold, dependsOn: cmd.dependsOn };
  const req =
    cmd.source.kind === "demo"
      ? demoRequest(cmd.source, flags)
      : await fileRequest(cmd.source.path, cmd.source.format, flags);
  const api = new CoordinatorApi(cmd.url);
  const { created, batch } = await api.submit(req);
  const items =
    batch.total ?? batch.counts.succeeded + batch.counts.failed + batch.counts.running + batch.counts.pending;
  println(
    io.out,
    created
      ? `batch ${batch.batchId} created: pipeline ${batch.pipeline}, ${items} items, ${batch.status}`
      : `batch ${batch.batchId} already exists with the same content: ${batch.status}`,
  );
  if (!cmd.watch) {
    println(
      io.out,
      `follow it: tally status ${batch.batchId} --watch   (dashboard: ${cmd.url}/batches/${encodeURIComponent(batch.batchId)})`,
    );
    return 0;
  }
  const final = await watchBatch(api, batch.batchId, cmd.intervalMs, io);
  println(io.out, renderOutcomeLine(finalSummaryOf(final)));
  return exitCodeFor(final);
}
