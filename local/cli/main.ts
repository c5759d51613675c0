// `tally`: the command-line client of the coordinator (submit, status, items, cancel, retry) and
// the reconciler (reconcile). Exit codes: 0 succeeded, 2 partial, 3 failed or cancelled, 1 usage,
// connection or API error. Launched by local/bin/tally.cjs.
import { ApiError, UnreachableError } from "./apiClient";
import { parseCommand, UsageError } from "./args";
import { type CliIo, println, processIo } from "./cliIo";
import { itemsCommand } from "./commands/items";
import { cancelCommand, retryCommand } from "./commands/operatorActions";
import { reconcileCommand } from "./commands/reconcile";
import { statusCommand } from "./commands/status";
import { submitCommand } from "./commands/submit";
import { usage } from "./usage";

export async function runCli(argv: string[], io: CliIo = processIo): Promise<number> {
  try {
    const cmd = parseCommand(argv, io.env);
    switch (cmd.kind) {
      case "help":
        io.out.write(usage);
        return 0;
      case "submit":
        return await submitCommand(cmd, io);
      case "status":
        return await statusCommand(cmd, io);
      case "items":
        return await itemsCommand(cmd, io);
      case "cancel":
        return await cancelCommand(cmd, io);
      case "retry":
        return await retryCommand(cmd, io);
      case "reconcile":
        return await reconcileCommand(cmd, io);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      println(io.err, `tally: ${err.message}`);
      io.err.write(err.showUsage ? `\n${usage}` : "run `tally --help` for usage\n");
    } else if (err instanceof ApiError) println(io.err, err.format());
    else if (err instanceof UnreachableError) println(io.err, err.message);
    else println(io.err, `tally: ${(err as Error).message ?? String(err)}`);
    return 1;
  }
}

if (require.main === module) {
  runCli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
