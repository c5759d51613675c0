// The ports the coordinator uses (the preamble's HandlerDeps shape): tests build these directly on
// emulator clients; functions/index.ts passes the shared process-wide set.
import type { TallyDeps } from "../../runtime";

export type HandlerDeps = Pick<TallyDeps, "config" | "ledger" | "queue" | "sink" | "clock" | "log">;
