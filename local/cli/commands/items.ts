// `tally items ID [--status S] [--limit N] [--json]`: pages through the API up to the limit and
// prints a table (or the JSON).
import type { Command } from "../args";
import { type CliIo, println } from "../cliIo";
import { CoordinatorApi } from "../coordinatorApi";

const pageSize = 500;

function field(item: Record<string, unknown>, ...names: string[]): unknown {
  for (const n of names) if (item[n] !== undefined && item[n] !== null) return item[n];
  return undefined;
}

function ms(v: unknown): number | null {
  if (typeof v === "number") return v;
  if (typeof v === "string") {
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : t;
  }
  return null;
}

function row(item: Record<string, unknown>): string[] {
  const error = (field(item, "error", "lastError") ?? null) as { kind?: string; message?: string } | null;
  const started = ms(item.startedAt);
  const finished = ms(item.finishedAt);
  const took = started !== null && finished !== null ? `${((finished - started) / 1000).toFixed(2)} s` : "";
  return [
    String(field(item, "id", "itemId") ?? "?"),
    String(item.status ?? "?"),
    String(item.attempt ?? ""),
    took,
    error ? `${error.kind ?? "error"}: ${error.message ?? ""}` : "",
  ];
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

export async function itemsCommand(cmd: Extract<Command, { kind: "items" }>, io: CliIo): Promise<number> {
  const api = new CoordinatorApi(cmd.url);
  const items: Record<string, unknown>[] = [];
  let pageToken: string | undefined;
  do {
    const page = await api.listItems(cmd.batchId, {
      status: cmd.status,
      limit: Math.min(pageSize, cmd.limit - items.length),
      pageToken,
    });
    items.push(...page.items);
    pageToken = page.nextPageToken;
  } while (pageToken && items.length < cmd.limit);
  if (cmd.json) {
    println(io.out, JSON.stringify({ items, nextPageToken: pageToken }, null, 2));
    return 0;
  }
  if (items.length === 0) {
    println(io.out, `no ${cmd.status ? `${cmd.status} ` : ""}items in batch ${cmd.batchId}`);
    return 0;
  }
  println(io.out, table([["ITEM", "STATUS", "ATTEMPT", "TOOK", "ERROR"], ...items.map(row)]));
  if (pageToken) println(io.out, `… more items: raise --limit (now ${cmd.limit})`);
  return 0;
}
