// The local stand-in for Cloud Run's instance management: each handler runs as a child process
// serving one Functions Framework target on a fixed loopback port; a process that dies is started
// again (logged), so killing a worker with SIGKILL is a fault the system recovers from. Stopping
// sends SIGTERM (handlers shut down gracefully), then SIGKILL after the grace period, as Cloud Run
// does after 10 s.
//
// Each child gets its own process group, so a Ctrl-C in the terminal reaches only the stack, which
// then stops the children in order; and an IPC channel, whose loss tells a child that the stack is
// gone (handlerProcess.ts then shuts itself down) — no orphans even if the stack is SIGKILLed.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { lineSplitter } from "./logLines";

export type Component = "coordinator" | "worker" | "reconciler";

export interface ProcessSpec {
  /** Display name and log prefix, e.g. "worker 1". */
  name: string;
  component: Component;
  port: number;
  env: Record<string, string>;
}

export interface SupervisorHooks {
  /** Every output line of the process. */
  onLine(name: string, line: string): void;
  /** Lifecycle news (started, exited, restarting). */
  onEvent(message: string, severity: "INFO" | "WARNING"): void;
}

const repoRoot = join(__dirname, "..");
const handlerEntry = join(__dirname, "handlerProcess.ts");

/** How long a stopping process may take to shut down before it is killed (Cloud Run: 10 s). */
export const defaultStopGraceMs = 10_000;

export class SupervisedProcess {
  readonly name: string;
  readonly component: Component;
  readonly port: number;
  readonly url: string;
  /** Times the process was started again after dying. */
  restarts = 0;
  private child: ChildProcess | null = null;
  private listening = false;
  private stopping = false;
  private startedAt = 0;
  private crashDelayMs = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private readonly tail: string[] = [];
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly spec: ProcessSpec,
    private readonly hooks: SupervisorHooks,
  ) {
    this.name = spec.name;
    this.component = spec.component;
    this.port = spec.port;
    this.url = `http://127.0.0.1:${spec.port}`;
  }

  /** The current process id (changes on restart); null while none runs. */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /** Running and listening on its port. */
  get live(): boolean {
    return this.listening && this.child !== null;
  }

  /** Starts the process; resolves once it listens. Rejects (with its last output) if it dies first. */
  start(timeoutMs = 60_000): Promise<void> {
    this.stopping = false;
    return new Promise((resolve, reject) => {
      const child = this.spawnChild();
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(`${this.name} did not listen on ${this.url} within ${timeoutMs} ms:\n${this.tailText()}`),
        );
      }, timeoutMs);
      const onMessage = (m: unknown) => {
        if ((m as { kind?: string })?.kind === "listening") {
          cleanup();
          resolve();
        }
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
        cleanup();
        reject(
          new Error(
            `${this.name} exited (${signal ?? `code ${code}`}) before listening on ${this.url}:\n${this.tailText()}`,
          ),
        );
      };
      const cleanup = () => {
        clearTimeout(timer);
        child.off("message", onMessage);
        child.off("exit", onExit);
      };
      child.on("message", onMessage);
      child.once("exit", onExit);
    });
  }

  /** Sends a signal to the process (a fault, for tests and the demo). Returns the pid signalled. */
  kill(signal: NodeJS.Signals = "SIGKILL"): number {
    const pid = this.pid;
    if (pid === null || !this.live) throw new Error(`${this.name} is not running`);
    process.kill(pid, signal);
    return pid;
  }

  /** Resolves once a process other than `previousPid` listens (after a crash and restart). */
  async waitForRestart(previousPid: number, timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (!(this.live && this.pid !== previousPid)) {
      if (Date.now() > deadline)
        throw new Error(
          `${this.name} was not running again within ${timeoutMs} ms of pid ${previousPid} dying`,
        );
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(0, deadline - Date.now()) + 1);
        this.waiters.add(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.pid!;
  }

  /** Graceful stop: SIGTERM, then SIGKILL after `graceMs`. No restart afterwards. */
  async stop(graceMs = defaultStopGraceMs): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    signalGroup(child, "SIGTERM");
    const hard = setTimeout(() => {
      this.hooks.onEvent(
        `${this.name} (pid ${child.pid}) did not stop within ${graceMs} ms; killing it`,
        "WARNING",
      );
      signalGroup(child, "SIGKILL");
    }, graceMs);
    await exited;
    clearTimeout(hard);
  }

  private spawnChild(): ChildProcess {
    const child = spawn(process.execPath, ["--import", "tsx", handlerEntry], {
      cwd: repoRoot,
      env: { ...this.spec.env, TALLY_TARGET: this.component, PORT: String(this.port) },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      detached: true,
    });
    this.child = child;
    this.listening = false;
    this.startedAt = Date.now();
    const out = lineSplitter((line) => this.onLine(line));
    const err = lineSplitter((line) => this.onLine(line));
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => err.push(b));
    child.on("message", (m: unknown) => {
      if ((m as { kind?: string })?.kind === "listening") {
        this.listening = true;
        this.notify();
      }
    });
    child.on("error", (e) =>
      this.hooks.onEvent(`${this.name} could not be started: ${e.message}`, "WARNING"),
    );
    child.once("exit", (code, signal) => {
      out.end();
      err.end();
      if (this.child === child) {
        this.child = null;
        this.listening = false;
      }
      this.notify();
      if (this.stopping) return;
      this.scheduleRestart(child.pid, code, signal);
    });
    return child;
  }

  private scheduleRestart(pid: number | undefined, code: number | null, signal: NodeJS.Signals | null) {
    // A process that dies soon after starting is crash-looping: back off, as Cloud Run does.
    const upMs = Date.now() - this.startedAt;
    this.crashDelayMs = upMs < 5_000 ? Math.min(Math.max(this.crashDelayMs * 2, 250), 5_000) : 0;
    this.hooks.onEvent(
      `${this.name} (pid ${pid}) exited with ${signal ?? `code ${code}`}; restarting${this.crashDelayMs ? ` in ${this.crashDelayMs} ms` : ""}`,
      "WARNING",
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopping) return;
      this.restarts++;
      this.start().then(
        () => this.hooks.onEvent(`${this.name} restarted (pid ${this.pid})`, "INFO"),
        (e: Error) => {
          if (!this.stopping)
            this.hooks.onEvent(`${this.name} failed to restart: ${e.message.split("\n")[0]}`, "WARNING");
        },
      );
    }, this.crashDelayMs);
  }

  private onLine(line: string) {
    this.tail.push(line);
    if (this.tail.length > 30) this.tail.shift();
    this.hooks.onLine(this.name, line);
  }

  private tailText(): string {
    return this.tail.length > 0 ? this.tail.join("\n") : "(no output)";
  }

  private notify() {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals) {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}
