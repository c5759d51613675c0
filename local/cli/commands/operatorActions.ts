// `tally cancel ID` and `tally retry ID [--watch]`: the operator actions of DESIGN.md §2.3.
import type { Command } from "../args";
import { exitCodeFor, finalSummaryOf } from "../batchView";
import { type CliIo, println } from "../cliIo";
import { CoordinatorApi } from "../coordinatorApi";
import { renderOutcomeLine } from "../progressBar";
import { watchBatch } from "../watch";

export async function cancelCommand(cmd: Extract<Command, { kind: "cancel" }>, io: CliIo): Promise<number> {
  const { batch } = await new CoordinatorApi(cmd.url).action(cmd.batchId, "cancel");
  println(
    io.out,
    `batch ${batch.batchId}: cancel requested (${batch.status}); pending items fail as "cancelled"`,
  );
  return 0;
}

export async function retryCommand(cmd: Extract<Command, { kind: "retry" }>, io: CliIo): Promise<number> {
  const api = new CoordinatorApi(cmd.url);
  const { batch } = await api.action(cmd.batchId, "retry");
  const generation = batch.generation === null ? "" : ` (generation ${batch.generation})`;
  println(io.out, `batch ${batch.batchId}: retrying its failed items${generation}: ${batch.status}`);
  if (!cmd.watch) return 0;
  const final = await watchBatch(api, batch.batchId, cmd.intervalMs, io);
  println(io.out, renderOutcomeLine(finalSummaryOf(final)));
  return exitCodeFor(final);
}
