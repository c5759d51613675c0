// A private redis-server for the BullMQ side of the peer comparison: installed from Debian's
// package only when absent, started on a free loopback port with persistence off (the Tally side
// runs on in-memory emulators too), and stopped at the end by its own pid.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createConnection } from "node:net";
import { freePort } from "../../local/emulators";
import { waitFor } from "../../local/waitFor";

export interface RedisHandle {
  host: string;
  port: number;
  pid: number;
  version: string;
  stop(): Promise<void>;
}

function redisBinary(): string | null {
  try {
    return execFileSync("sh", ["-c", "command -v redis-server"], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

/** Installs Debian's redis-server if it is missing (the only package the bench installs). */
export function ensureRedisInstalled(log: (line: string) => void): string {
  const found = redisBinary();
  if (found) return found;
  log("redis-server not found: installing it (apt-get update && apt-get install -y redis-server)");
  try {
    execFileSync("sh", ["-c", "apt-get update -qq && apt-get install -y -qq redis-server"], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  } catch (err) {
    throw new Error(
      `could not install redis-server (needed for the BullMQ peer comparison): ${(err as Error).message}. Install it yourself (apt-get install redis-server) or skip the phase with --skip peer.`,
    );
  }
  const installed = redisBinary();
  if (!installed) throw new Error("redis-server is still missing after apt-get install");
  return installed;
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: "127.0.0.1", port }, () => sock.write("PING\r\n"));
    sock.setTimeout(500, () => {
      sock.destroy();
      resolve(false);
    });
    sock.on("data", (d) => {
      sock.destroy();
      resolve(d.toString().startsWith("+PONG"));
    });
    sock.on("error", () => resolve(false));
  });
}

export async function startRedis(log: (line: string) => void): Promise<RedisHandle> {
  const bin = ensureRedisInstalled(log);
  const version = execFileSync(bin, ["--version"], { encoding: "utf8" }).trim();
  const port = await freePort();
  const child: ChildProcess = spawn(
    bin,
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      // BullMQ's recommendation: never evict its keys.
      "--maxmemory-policy",
      "noeviction",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  // Never outlive the bench, whatever way it ends.
  const killOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  await waitFor(
    `redis-server on 127.0.0.1:${port}`,
    async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode}): ${stderr}`);
      return ping(port);
    },
    15_000,
    100,
  );
  return {
    host: "127.0.0.1",
    port,
    pid: child.pid!,
    version,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
        setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        }, 3000).unref();
      }),
  };
}
