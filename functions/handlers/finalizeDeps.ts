// The finalization settings every handler uses (worker, coordinator, reconciler): the one place
// that says how long a finalization claim may go unrenewed and what runs after a batch is
// finalized (its dependents start at once: reconciler/startDependents.ts).
import { type FinalizeDeps, settleBatch } from "../core/finalizeBatch";
import type { Logger } from "../core/logger";
import type { HandlerDeps } from "../runtime";
import { startDependents } from "./reconciler/startDependents";

export function finalizeDepsFor(deps: HandlerDeps, log: Logger = deps.log): FinalizeDeps {
  return {
    ledger: deps.ledger,
    sink: deps.sink,
    clock: deps.clock,
    log,
    staleFinalizingMs: deps.config.topology.reconcile.staleFinalizingSeconds * 1000,
    onFinalized: (batch) => startDependents(deps, batch),
  };
}

/**
 * Settles once a request's own work is done (items stored, a cancel swept, a retry reset). A failed
 * finalization — an export that failed, already recorded on the batch for the reconciler's next
 * attempt — is logged, not made the request's error: what the request did has happened.
 */
export async function settleAfterRequest(fdeps: FinalizeDeps, batchId: string): Promise<void> {
  try {
    await settleBatch(fdeps, batchId);
  } catch (err) {
    fdeps.log.warn(
      "batch.settle_failed",
      `batch ${batchId}: finalization failed, left to the reconciler: ${(err as Error).message}`,
      {
        batchId,
      },
    );
  }
}
