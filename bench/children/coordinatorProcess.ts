// The coordinator in its own process for the submission benchmark, so its memory can be read from
// /proc (VmHWM) apart from the bench's. Built and served as deployed: runtime.ts createDeps, the
// coordinator handler, registered with the Functions Framework and served by the framework's own
// Express server (body parsers included: every request body is read into memory before the handler
// runs, as on Cloud Run). The bench submits through it with open / append / seal
// (local/client/tallyClient.ts), in requests under Cloud Run's 32 MiB cap.
import type { AddressInfo } from "node:net";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import { createCoordinatorHandler } from "../../functions/handlers/coordinator";
import { createDeps } from "../../functions/runtime";

async function main() {
  const deps = await createDeps("coordinator");
  http("coordinator", createCoordinatorHandler(deps));
  const server = getTestServer("coordinator");
  server.requestTimeout = 0;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  process.stdout.write(`bench-coordinator-listening ${(server.address() as AddressInfo).port}\n`);
  const stop = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await deps.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
}

main().catch((err) => {
  process.stderr.write(`coordinator failed to start: ${(err as Error).stack}\n`);
  process.exit(1);
});
