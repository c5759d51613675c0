// Emulator clients for the bench process itself (baselines, probes, in-process handlers). Each
// phase uses its own project id, so phases never see each other's data.
import { randomUUID } from "node:crypto";
import { Firestore } from "@google-cloud/firestore";
import { PubSub } from "@google-cloud/pubsub";

process.env.METADATA_SERVER_DETECTION = "none";

export interface EmulatorHosts {
  pubsubHost: string;
  firestoreHost: string;
}

export function benchProjectId(phase: string): string {
  return `bench-${phase}-${randomUUID().slice(0, 6)}`;
}

export function firestoreClient(hosts: EmulatorHosts, projectId: string): Firestore {
  return new Firestore({
    projectId,
    host: hosts.firestoreHost,
    ssl: false,
    ignoreUndefinedProperties: true,
    preferRest: false,
  });
}

export function pubsubClient(hosts: EmulatorHosts, projectId: string): PubSub {
  return new PubSub({ projectId, apiEndpoint: hosts.pubsubHost, emulatorMode: true });
}

/** Environment that points a child process's Google clients at the emulators. */
export function emulatorEnv(hosts: EmulatorHosts, projectId: string): Record<string, string> {
  return {
    FIRESTORE_EMULATOR_HOST: hosts.firestoreHost,
    PUBSUB_EMULATOR_HOST: hosts.pubsubHost,
    GOOGLE_CLOUD_PROJECT: projectId,
    METADATA_SERVER_DETECTION: "none",
  };
}
