// `tally reconcile`: one reconciler pass now (the same call the scheduler makes), printing its
// JSON summary.
import { buildTopology } from "../../../functions/topology";
import { HttpClient } from "../apiClient";
import type { Command } from "../args";
import { type CliIo, println } from "../cliIo";

export async function reconcileCommand(
  cmd: Extract<Command, { kind: "reconcile" }>,
  io: CliIo,
): Promise<number> {
  const http = new HttpClient(cmd.reconcilerUrl, "reconciler");
  const res = await http.request("POST", buildTopology({ prefix: "tally", pipelines: [] }).reconcilePath, {
    json: {},
  });
  println(io.out, JSON.stringify(res.body ?? {}, null, 2));
  return 0;
}
