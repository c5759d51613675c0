// The deployable entry point: registers the three Functions Framework HTTP targets. Cloud Run
// functions load this file and serve the target named by FUNCTION_TARGET (`coordinator`,
// `worker` or `reconciler`); the local stack (local/handlerProcess.ts) and the bundle test load the
// very same file. Adapters are built lazily, once per process, on the first request.
import { http } from "@google-cloud/functions-framework";
import { createDashboard } from "./dashboard";
import { createCoordinatorHandler } from "./handlers/coordinator";
import { createReconcilerHandler } from "./handlers/reconciler/reconcilerHandler";
import { createWorkerHandler, installShutdown, type WorkerHandler } from "./handlers/worker";
import type { HttpHandler } from "./http/httpTypes";
import { type HandlerDeps, sharedDeps } from "./runtime";

type AnyHandler = (req: never, res: never) => Promise<void>;

/** Builds the handler on first use, so importing this file (to register targets) connects to nothing. */
function lazy<H extends AnyHandler>(component: string, build: (deps: HandlerDeps) => H) {
  let built: Promise<H> | undefined;
  const get = () => {
    built ??= sharedDeps(component).then(build);
    return built;
  };
  const handler = async (req: Parameters<H>[0], res: Parameters<H>[1]) => {
    const h = await get();
    await (h as unknown as (a: unknown, b: unknown) => Promise<void>)(req, res);
  };
  return { handler, get, started: () => built !== undefined };
}

const coordinator = lazy("coordinator", (deps) =>
  createCoordinatorHandler(deps, { dashboard: createDashboard(deps) as HttpHandler }),
);
const worker = lazy("worker", (deps): WorkerHandler => createWorkerHandler(deps));
const reconciler = lazy("reconciler", (deps) => createReconcilerHandler(deps));

http("coordinator", coordinator.handler as never);
http("worker", worker.handler as never);
http("reconciler", reconciler.handler as never);

// The worker releases its in-flight items on SIGTERM (Cloud Run gives 10 s before SIGKILL) so they
// are redelivered at once instead of after their lease (F9). Only in a worker process: Cloud Run
// sets FUNCTION_TARGET, the local stack TALLY_TARGET.
const target = process.env.FUNCTION_TARGET ?? process.env.TALLY_TARGET;
if (target === "worker") {
  installShutdown(
    {
      shutdown: async () => {
        if (worker.started()) await (await worker.get()).shutdown();
      },
    },
    { exclusive: true },
  );
}
