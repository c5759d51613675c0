// `npm start`: the local stack in the foreground (DESIGN.md §5). Prints the ready block (see
// readyLines.ts) once every process answers, then the processes' logs, prefixed by process.
// Ctrl-C / SIGTERM stops everything gracefully. Exit codes: 0 after a clean stop, 1 for a bad flag,
// a missing tool or a failed start.
import { MissingToolError } from "./emulators";
import { type LocalStack, startLocalStack } from "./localStack";
import { parseStartArgs, startUsage, UsageError } from "./stackOptions";

async function main(): Promise<number> {
  let opts: ReturnType<typeof parseStartArgs>;
  try {
    opts = parseStartArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`npm start: ${err.message}`);
      return 1;
    }
    throw err;
  }
  if (opts === null) {
    console.log(startUsage);
    return 0;
  }

  let stack: LocalStack | null = null;
  let stopRequested: NodeJS.Signals | null = null;
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopRequested) {
        console.log(`[stack] still stopping (handlers get up to 10 s to shut down)…`);
        return;
      }
      stopRequested = signal;
      resolve();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });

  try {
    stack = await startLocalStack(opts);
  } catch (err) {
    if (err instanceof MissingToolError || err instanceof UsageError) {
      console.error(`npm start: ${err.message}`);
      return 1;
    }
    console.error(`npm start: the local stack failed to start: ${(err as Error).stack ?? err}`);
    return 1;
  }
  if (stopRequested) {
    await stack.stop();
    return 0;
  }
  for (const line of stack.readyLines) console.log(line);

  await stopped;
  console.log(`[stack] ${stopRequested} received: stopping the handlers, then the emulators`);
  const t0 = Date.now();
  await stack.stop();
  console.log(`[stack] stopped in ${Date.now() - t0} ms; nothing left running`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`npm start: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
