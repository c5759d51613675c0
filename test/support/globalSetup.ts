// Starts the real Pub/Sub and Firestore emulators once per test run and hands their hosts to the
// test files (inject("pubsubHost") / inject("firestoreHost")). Every test file uses its own
// project id, so files running in parallel never share data.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmulators } from "../../local/emulators";

declare module "vitest" {
  export interface ProvidedContext {
    pubsubHost: string;
    firestoreHost: string;
  }
}

// vitest/node is ESM-only; this is the part of its TestProject that setup uses.
interface SetupProject {
  provide<K extends "pubsubHost" | "firestoreHost">(key: K, value: string): void;
}

export default async function setup(project: SetupProject) {
  const dataDir = mkdtempSync(join(tmpdir(), "tally-test-"));
  const started = Date.now();
  const emulators = await startEmulators({ dataDir });
  console.log(
    `emulators: pubsub ${emulators.pubsubHost}, firestore ${emulators.firestoreHost} (${Date.now() - started} ms)`,
  );
  project.provide("pubsubHost", emulators.pubsubHost);
  project.provide("firestoreHost", emulators.firestoreHost);
  process.env.PUBSUB_EMULATOR_HOST = emulators.pubsubHost;
  process.env.FIRESTORE_EMULATOR_HOST = emulators.firestoreHost;
  return async () => {
    await emulators.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
}
