// `tally status ID [--watch] [--json]`: the batch as the API reports it; the exit code follows the
// outcome once the batch is final.
import type { Command } from "../args";
import { exitCodeFor, finalSummaryOf, isFinal, renderStatus, toBatchView } from "../batchView";
import { type CliIo, println } from "../cliIo";
import { CoordinatorApi } from "../coordinatorApi";
import { renderOutcomeLine } from "../progressBar";
import { watchBatch } from "../watch";

export async function statusCommand(cmd: Extract<Command, { kind: "status" }>, io: CliIo): Promise<number> {
  const api = new CoordinatorApi(cmd.url);
  if (cmd.watch) {
    const final = await watchBatch(api, cmd.batchId, cmd.intervalMs, io);
    if (cmd.json) println(io.out, JSON.stringify(await api.getBatchRaw(cmd.batchId), null, 2));
    else println(io.out, renderOutcomeLine(finalSummaryOf(final)));
    return exitCodeFor(final);
  }
  const raw = await api.getBatchRaw(cmd.batchId);
  const view = toBatchView(raw);
  println(io.out, cmd.json ? JSON.stringify(raw, null, 2) : renderStatus(view));
  return isFinal(view) ? exitCodeFor(view) : 0;
}
