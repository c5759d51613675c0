// The composition root: builds the adapters the handlers use from the configuration. Each handler
// process builds one set, lazily, on its first request (Cloud Run instances start cold).
// Emulators are picked up by the client libraries from FIRESTORE_EMULATOR_HOST /
// PUBSUB_EMULATOR_HOST, so the same code runs locally and in the cloud.
import { Firestore } from "@google-cloud/firestore";
import { PubSub } from "@google-cloud/pubsub";
import { FirestoreLedger } from "./adapters/firestoreLedger";
import { PubSubWorkQueue, topologyTopics } from "./adapters/pubsubWorkQueue";
import { createResultSink } from "./adapters/resultSinkFactory";
import { loadConfig, type TallyConfig } from "./config";
import { createLogger, type Logger } from "./core/logger";
import { type Clock, type Ledger, type ResultSink, systemClock, type WorkQueue } from "./core/ports";
import { faultsFromEnv } from "./faults";

export interface TallyDeps {
  config: TallyConfig;
  ledger: Ledger;
  queue: WorkQueue;
  sink: ResultSink;
  clock: Clock;
  log: Logger;
  pubsub: PubSub;
  firestore: Firestore;
  close(): Promise<void>;
}

export async function createDeps(component: string, config: TallyConfig = loadConfig()): Promise<TallyDeps> {
  const faults = faultsFromEnv(process.env);
  const firestore = new Firestore({ projectId: config.projectId, ignoreUndefinedProperties: true });
  const pubsub = new PubSub({ projectId: config.projectId });
  const ledger = new FirestoreLedger(firestore, {
    retentionDays: config.env.TALLY_RETENTION_DAYS,
    failCompletionRate: faults.failCompletionRate,
    failAfterCompletionRate: faults.failAfterCompletionRate,
    skipFinalizeRate: faults.skipFinalizeRate,
  });
  const queue = new PubSubWorkQueue(pubsub, topologyTopics(config.topology));
  const sink = await createResultSink(config);
  const log = createLogger({ component });
  return {
    config,
    ledger,
    queue,
    sink,
    clock: systemClock,
    log,
    pubsub,
    firestore,
    close: async () => {
      await Promise.allSettled([sink.close(), pubsub.close(), firestore.terminate()]);
    },
  };
}

const memo = new Map<string, Promise<TallyDeps>>();
/** One set of adapters per component per process. */
export function sharedDeps(component: string): Promise<TallyDeps> {
  let p = memo.get(component);
  if (!p) {
    p = createDeps(component);
    memo.set(component, p);
  }
  return p;
}

/** What a handler needs: the ports and the configuration (tests build these on emulator clients). */
export type HandlerDeps = Pick<TallyDeps, "config" | "ledger" | "queue" | "sink" | "clock" | "log">;
