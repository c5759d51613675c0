// The emulator harness: starts the Google Cloud SDK's Pub/Sub and Firestore emulators on free
// loopback ports, each in its own process group (a plain kill of `gcloud` leaves the Java process
// running, so we kill the whole group), waits until each answers, and stops them. Used by the
// test suite's global setup, the local stack, the chaos suite and the benchmarks.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { waitFor } from "./waitFor";

export interface EmulatorHandle {
  name: "pubsub" | "firestore";
  /** host:port, as the client libraries' *_EMULATOR_HOST variables expect. */
  host: string;
  pid: number;
  stop(): Promise<void>;
}

export class MissingToolError extends Error {}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function which(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

let sdkRootCache: string | undefined;
function sdkRoot(): string {
  if (sdkRootCache) return sdkRootCache;
  const out = execFileSync("gcloud", ["info", "--format=value(installation.sdk_root)"], {
    encoding: "utf8",
    env: { ...process.env, CLOUDSDK_CORE_DISABLE_PROMPTS: "1" },
  }).trim();
  sdkRootCache = out;
  return out;
}

/** Checks Java and the SDK components up front so a missing piece is one clear line, not a hang. */
export function checkPrerequisites(which_: Array<"pubsub" | "firestore"> = ["pubsub", "firestore"]): void {
  if (!which("java"))
    throw new MissingToolError(
      "Java 17+ is required by the Google Cloud emulators: install it (Debian: apt-get install openjdk-17-jre-headless).",
    );
  if (!which("gcloud"))
    throw new MissingToolError(
      "The Google Cloud SDK (gcloud) is required: install google-cloud-cli with the pubsub and firestore emulator components.",
    );
  const root = sdkRoot();
  const components = {
    pubsub: { dir: "pubsub-emulator", pkg: "google-cloud-cli-pubsub-emulator", component: "pubsub-emulator" },
    firestore: {
      dir: "cloud-firestore-emulator",
      pkg: "google-cloud-cli-firestore-emulator",
      component: "cloud-firestore-emulator",
    },
  };
  for (const name of which_) {
    const c = components[name];
    try {
      execFileSync("test", ["-d", join(root, "platform", c.dir)]);
    } catch {
      throw new MissingToolError(
        `The ${name} emulator is not installed: apt-get install ${c.pkg} (or gcloud components install ${c.component}).`,
      );
    }
  }
}

async function waitForHttp(
  url: string,
  child: ChildProcess,
  name: string,
  timeoutMs: number,
  logTail: () => string,
) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null)
      throw new Error(
        `the ${name} emulator exited with code ${child.exitCode} before answering:\n${logTail()}`,
      );
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`the ${name} emulator did not answer on ${url} within ${timeoutMs} ms:\n${logTail()}`);
}

/** Is any process left in the group (the Java grandchild outlives the `gcloud` leader by a moment)? */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Stops the whole process group and resolves only once no process of it is left. */
async function killGroup(child: ChildProcess): Promise<void> {
  if (child.pid === undefined) return;
  const pgid = child.pid;
  if (!groupAlive(pgid)) return;
  try {
    process.kill(-pgid, "SIGTERM");
  } catch {
    return;
  }
  try {
    await waitFor(`the emulator process group ${pgid} to exit`, () => !groupAlive(pgid), 3000, 50);
  } catch {
    // The Java process sometimes ignores SIGTERM while flushing; make sure the group is gone.
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      /* gone */
    }
    // A loaded machine can take a while to reap a JVM; wait long enough that nothing is left behind.
    await waitFor(`the emulator process group ${pgid} to die`, () => !groupAlive(pgid), 20_000, 50).catch(
      () => process.stderr.write(`warning: emulator process group ${pgid} still exists after SIGKILL\n`),
    );
  }
}

export interface StartOptions {
  dataDir: string;
  port?: number;
  timeoutMs?: number;
  /** Where the emulator's own output goes; by default it is kept in memory for error messages. */
  onOutput?: (line: string) => void;
  /** More flags for `gcloud … start` (e.g. the Firestore emulator's `--import-data`). */
  extraArgs?: string[];
}

async function startEmulator(name: "pubsub" | "firestore", opts: StartOptions): Promise<EmulatorHandle> {
  const port = opts.port ?? (await freePort());
  const host = `127.0.0.1:${port}`;
  const dir = join(opts.dataDir, name);
  mkdirSync(dir, { recursive: true }); // the emulator refuses a --data-dir that does not exist
  const args =
    name === "pubsub"
      ? ["beta", "emulators", "pubsub", "start", `--host-port=${host}`, `--data-dir=${dir}`, "--quiet"]
      : ["emulators", "firestore", "start", `--host-port=${host}`, "--quiet"];
  args.push(...(opts.extraArgs ?? []));
  const child = spawn("gcloud", args, {
    detached: true, // its own process group, so the Java grandchild can be killed with it
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, CLOUDSDK_CORE_DISABLE_PROMPTS: "1" },
  });
  const tail: string[] = [];
  const onData = (buf: Buffer) => {
    for (const line of buf.toString().split("\n")) {
      if (!line) continue;
      tail.push(line);
      if (tail.length > 40) tail.shift();
      opts.onOutput?.(line);
    }
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  // Never keep the parent alive for the emulator's sake; stop() is explicit.
  child.unref();
  (child.stdout as { unref?: () => void } | null)?.unref?.();
  (child.stderr as { unref?: () => void } | null)?.unref?.();
  try {
    await waitForHttp(`http://${host}/`, child, name, opts.timeoutMs ?? 60_000, () => tail.join("\n"));
  } catch (err) {
    await killGroup(child);
    throw err;
  }
  return { name, host, pid: child.pid!, stop: () => killGroup(child) };
}

export const startPubsubEmulator = (opts: StartOptions) => startEmulator("pubsub", opts);
export const startFirestoreEmulator = (opts: StartOptions) => startEmulator("firestore", opts);

export interface Emulators {
  pubsubHost: string;
  firestoreHost: string;
  projectId: string;
  /** The process-group leaders (`gcloud`) of both emulators. */
  pids: { pubsub: number; firestore: number };
  stop(): Promise<void>;
}

/** Starts both emulators in parallel. */
export async function startEmulators(opts: {
  dataDir: string;
  projectId?: string;
  onOutput?: (name: string, line: string) => void;
  /** More flags for the Firestore emulator (e.g. `--import-data=…` to load an export). */
  firestoreArgs?: string[];
}): Promise<Emulators> {
  checkPrerequisites();
  const [ps, fs] = await Promise.allSettled([
    startPubsubEmulator({ dataDir: opts.dataDir, onOutput: (l) => opts.onOutput?.("pubsub", l) }),
    startFirestoreEmulator({
      dataDir: opts.dataDir,
      onOutput: (l) => opts.onOutput?.("firestore", l),
      extraArgs: opts.firestoreArgs,
    }),
  ]);
  if (ps.status === "rejected" || fs.status === "rejected") {
    if (ps.status === "fulfilled") await ps.value.stop();
    if (fs.status === "fulfilled") await fs.value.stop();
    throw ps.status === "rejected" ? ps.reason : (fs as PromiseRejectedResult).reason;
  }
  return {
    pubsubHost: ps.value.host,
    firestoreHost: fs.value.host,
    projectId: opts.projectId ?? "tally-local",
    pids: { pubsub: ps.value.pid, firestore: fs.value.pid },
    stop: async () => {
      await Promise.all([ps.value.stop(), fs.value.stop()]);
    },
  };
}

/** Deletes every document in the emulator's default database (between tests). */
export async function clearFirestore(firestoreHost: string, projectId: string): Promise<void> {
  const res = await fetch(
    `http://${firestoreHost}/emulator/v1/projects/${projectId}/databases/(default)/documents`,
    { method: "DELETE" },
  );
  if (!res.ok) throw new Error(`clearing the Firestore emulator failed: ${res.status} ${await res.text()}`);
}

/**
 * Exports the Firestore emulator's data of one project into `dir` (which must exist); the emulator
 * writes a timestamped folder there. Returns the path of its `.overall_export_metadata` file, which
 * `--import-data` takes on the next start.
 */
export async function exportFirestore(
  firestoreHost: string,
  projectId: string,
  dir: string,
): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const before = new Set(readdirSync(dir));
  const res = await fetch(`http://${firestoreHost}/emulator/v1/projects/${projectId}:export`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ database: `projects/${projectId}/databases/(default)`, export_directory: dir }),
  });
  if (!res.ok) throw new Error(`exporting the Firestore emulator failed: ${res.status} ${await res.text()}`);
  const created = readdirSync(dir).find((d) => !before.has(d) && d.startsWith("firestore_export_"));
  if (!created) throw new Error(`the Firestore emulator reported an export but wrote nothing under ${dir}`);
  return join(dir, created, `${created}.overall_export_metadata`);
}
