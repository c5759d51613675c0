// Runs one of the bench's TypeScript child scripts (bench/children/*) in its own Node process via
// tsx, waits for it to say it is ready, and stops it by its own pid. Children are never killed by
// name: the bench ends exactly the processes it started.
import { type ChildProcess, spawn } from "node:child_process";
import { resolve } from "node:path";

// Children still running when the bench exits (an error, Ctrl-C) are killed with it, by pid.
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

export interface TsChild {
  pid: number;
  process: ChildProcess;
  /** Resolves with the exit code (or signal) once the process has exited. */
  exited: Promise<string>;
  /** Lines written to stderr (the last 50), for error messages. */
  stderrTail(): string;
  kill(signal: NodeJS.Signals): void;
  stop(timeoutMs?: number): Promise<void>;
}

export interface SpawnTsOptions {
  env?: NodeJS.ProcessEnv;
  /** A stdout line that means the child is ready (default: "ready"). */
  readyLine?: (line: string) => boolean;
  readyTimeoutMs?: number;
  onStdoutLine?: (line: string) => void;
}

export async function spawnTs(script: string, opts: SpawnTsOptions = {}): Promise<TsChild> {
  // A compiled child (bench/support/compiledChild.ts) runs under plain node, a .ts one under tsx.
  const loader = script.endsWith(".js") ? [] : ["--import", "tsx"];
  // Profiling knob (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"): flags NODE_OPTIONS refuses.
  const nodeArgs = (process.env.TALLY_BENCH_CHILD_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, ...loader, resolve(script)], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...opts.env },
  });
  const tail: string[] = [];
  child.stderr!.on("data", (d: Buffer) => {
    for (const l of d.toString().split("\n")) {
      if (!l) continue;
      tail.push(l);
      if (tail.length > 50) tail.shift();
    }
  });
  running.add(child);
  const exited = new Promise<string>((res) =>
    child.once("exit", (code, sig) => {
      running.delete(child);
      res(sig ? String(sig) : String(code));
    }),
  );
  const isReady = opts.readyLine ?? ((l: string) => l.trim() === "ready");
  await new Promise<void>((res, rej) => {
    let buf = "";
    let ready = false;
    const timer = setTimeout(() => {
      rej(
        new Error(
          `${script} did not become ready within ${opts.readyTimeoutMs ?? 60_000} ms: ${tail.join("\n")}`,
        ),
      );
    }, opts.readyTimeoutMs ?? 60_000);
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      let i = buf.indexOf("\n");
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        opts.onStdoutLine?.(line);
        if (!ready && isReady(line)) {
          ready = true;
          clearTimeout(timer);
          res();
        }
        i = buf.indexOf("\n");
      }
    });
    void exited.then((how) => {
      if (!ready) {
        clearTimeout(timer);
        rej(new Error(`${script} exited (${how}) before it was ready:\n${tail.join("\n")}`));
      }
    });
  });
  return {
    pid: child.pid!,
    process: child,
    exited,
    stderrTail: () => tail.join("\n"),
    kill: (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    stop: async (timeoutMs = 5000) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      await exited;
      clearTimeout(t);
    },
  };
}
