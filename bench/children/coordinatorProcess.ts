// The coordinator in its own process for the submission benchmark, so its memory can be read from
// /proc (VmHWM) apart from the bench's. Built exactly as deployed (runtime.ts createDeps, the
// coordinator handler) and served by functions/http/streamingServer.ts, the plain node:http server
// that streams request bodies (as the local stack serves large NDJSON submissions).
import { createCoordinatorHandler } from "../../functions/handlers/coordinator";
import { startStreamingServer } from "../../functions/http/streamingServer";
import { createDeps } from "../../functions/runtime";

async function main() {
  const deps = await createDeps("coordinator");
  const handler = createCoordinatorHandler(deps);
  const server = await startStreamingServer(handler, { log: deps.log });
  process.stdout.write(`bench-coordinator-listening ${server.port}\n`);
  const stop = async () => {
    await server.close();
    await deps.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
}

main().catch((err) => {
  process.stderr.write(`coordinator failed to start: ${(err as Error).stack}\n`);
  process.exit(1);
});
