// The finalization settings every handler uses (worker, coordinator, reconciler): the one place
// that says how long a finalization claim may go unrenewed and what runs after a batch is
// finalized (its dependents start at once: reconciler/startDependents.ts).
import type { FinalizeDeps } from "../core/finalizeBatch";
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
