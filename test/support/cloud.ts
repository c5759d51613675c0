// Per-test-file clients for the emulators started by globalSetup. Each call gets a fresh project
// id, so data never leaks between files or tests that ask for their own.
import { randomUUID } from "node:crypto";
import { Firestore } from "@google-cloud/firestore";
import { PubSub } from "@google-cloud/pubsub";
import { inject } from "vitest";

process.env.METADATA_SERVER_DETECTION = "none";

export function uniqueProjectId(prefix = "t"): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

export function emulatorHosts() {
  return { pubsubHost: inject("pubsubHost"), firestoreHost: inject("firestoreHost") };
}

export function testFirestore(projectId: string): Firestore {
  const { firestoreHost } = emulatorHosts();
  process.env.FIRESTORE_EMULATOR_HOST = firestoreHost;
  return new Firestore({
    projectId,
    host: firestoreHost,
    ssl: false,
    ignoreUndefinedProperties: true,
    preferRest: false,
  });
}

export function testPubSub(projectId: string): PubSub {
  const { pubsubHost } = emulatorHosts();
  process.env.PUBSUB_EMULATOR_HOST = pubsubHost;
  return new PubSub({ projectId, apiEndpoint: pubsubHost, emulatorMode: true });
}

export { waitFor } from "../../local/waitFor";
