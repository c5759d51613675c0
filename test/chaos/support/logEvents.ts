// The handlers' structured log lines (functions/core/logger.ts), indexed so a scenario can count
// lifecycle events: how many times an item succeeded, which process finalized a batch, which poison
// message was recorded. Only JSON lines with an `event` are kept, each as a compact record.

export interface LogEvent {
  /** When the line was read (epoch ms). */
  at: number;
  /** The process that wrote it, e.g. "worker 1", "reconciler". */
  source: string;
  event: string;
  severity: string;
  message: string;
  batchId: string | null;
  itemId: string | null;
  messageId: string | null;
  fields: Record<string, unknown>;
}

export interface LogFilter {
  event?: string;
  batchId?: string;
  itemId?: string;
  messageId?: string;
  /** Source name prefix, e.g. "worker" for every worker. */
  source?: string;
}

/** Frequent events (one per tick) kept only as the last few, for failure messages. */
const ringEvents = new Set(["reconcile.summary"]);
const ringSize = 20;

export class LogIndex {
  private readonly byBatch = new Map<string, LogEvent[]>();
  private readonly unbatched: LogEvent[] = [];
  private readonly ring: LogEvent[] = [];
  private readonly listeners = new Set<(e: LogEvent) => void>();

  add(source: string, line: string): void {
    if (!line.startsWith("{")) return;
    let raw: Record<string, unknown>;
    try {
      raw = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (typeof raw.event !== "string") return;
    const { event, severity, message, time: _time, batchId, itemId, messageId, ...fields } = raw;
    const e: LogEvent = {
      at: Date.now(),
      source,
      event,
      severity: String(severity ?? "DEFAULT"),
      message: String(message ?? ""),
      batchId: typeof batchId === "string" ? batchId : null,
      itemId: typeof itemId === "string" ? itemId : null,
      messageId: typeof messageId === "string" ? messageId : null,
      fields,
    };
    if (ringEvents.has(e.event)) {
      this.ring.push(e);
      if (this.ring.length > ringSize) this.ring.shift();
      return;
    }
    if (e.batchId) {
      const list = this.byBatch.get(e.batchId);
      if (list) list.push(e);
      else this.byBatch.set(e.batchId, [e]);
    } else this.unbatched.push(e);
    for (const l of this.listeners) l(e);
  }

  events(filter: LogFilter = {}): LogEvent[] {
    const pool = filter.batchId
      ? (this.byBatch.get(filter.batchId) ?? [])
      : [...this.unbatched, ...[...this.byBatch.values()].flat()];
    return pool.filter(
      (e) =>
        (filter.event === undefined || e.event === filter.event) &&
        (filter.itemId === undefined || e.itemId === filter.itemId) &&
        (filter.messageId === undefined || e.messageId === filter.messageId) &&
        (filter.source === undefined || e.source.startsWith(filter.source)),
    );
  }

  /** The last few reconcile summaries (each tick's), newest last. */
  recentTicks(): LogEvent[] {
    return [...this.ring];
  }

  /** An item's events as `+ms event (source) fields`, relative to `since`, for failure messages. */
  timeline(batchId: string, itemId: string, since: number): string {
    return this.events({ batchId, itemId })
      .map((e) => {
        const f = ["attempt", "reason", "kind", "released", "status"]
          .filter((k) => e.fields[k] !== undefined)
          .map((k) => `${k}=${JSON.stringify(e.fields[k])}`)
          .join(" ");
        return `${e.at - since >= 0 ? "+" : ""}${e.at - since} ms ${e.event} (${e.source})${f ? ` ${f}` : ""}`;
      })
      .join("; ");
  }

  /** How many times each item logged `event` in the batch. */
  countByItem(batchId: string, event: string): Map<string, number> {
    const counts = new Map<string, number>();
    for (const e of this.events({ batchId, event }))
      if (e.itemId) counts.set(e.itemId, (counts.get(e.itemId) ?? 0) + 1);
    return counts;
  }

  onEvent(listener: (e: LogEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Forgets a batch's events (the soak runs large batches). */
  forget(batchId: string): void {
    this.byBatch.delete(batchId);
  }
}
