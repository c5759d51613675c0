// One paged sweep over batches with a cursor that persists across ticks (issue #15 item 6): a tick
// reads at most maxPagesPerSweep pages (and no new page once its time budget is spent), stores where
// it stopped, and the next tick goes on from there; the end of the listing clears the cursor so the
// sweep starts over. Listings are oldest first, so the batches left for the next tick are the
// younger ones. Without the persisted cursor a listing whose entries do not leave it (a running
// batch with live items, a blocked batch still waiting, a given-up export) would show the same first
// pages every tick and never reach the rest.
import type { Batch } from "../../core/model";
import type { Page } from "../../core/ports";
import type { ReconcileContext } from "./reconcileContext";

export async function pagedSweep(
  ctx: ReconcileContext,
  cursorName: string,
  readPage: (pageToken: string | undefined) => Promise<Page<Batch>>,
  handlePage: (entries: Batch[]) => Promise<void>,
): Promise<void> {
  const { ledger } = ctx.deps;
  let pageToken = await ledger.readSweepCursor(cursorName);
  const startedFrom = pageToken;
  for (let page = 0; ; page++) {
    if (page >= ctx.maxPagesPerSweep || (page > 0 && ctx.outOfTime())) {
      ctx.moreWork = true;
      await ledger.writeSweepCursor(cursorName, pageToken, ctx.now());
      return;
    }
    const { entries, nextPageToken } = await readPage(pageToken);
    await handlePage(entries);
    if (!nextPageToken) {
      // The end: the next tick starts from the beginning again.
      if (startedFrom !== undefined) await ledger.writeSweepCursor(cursorName, undefined, ctx.now());
      return;
    }
    pageToken = nextPageToken;
  }
}
