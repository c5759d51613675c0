// The deployable entry point: registers the three Functions Framework HTTP targets. Cloud Run
// functions load this file and serve the target named by FUNCTION_TARGET (`coordinator`,
// `worker` or `reconciler`); the local stack (local/handlerProcess.ts) and the bundle test load the
// very same file. Adapters are built lazily, once per process, on the first request.
//
// Errors: every answer is Tally's JSON error body, never the framework's HTML or text pages.
// Requests the framework refuses before a handler runs (a malformed JSON body, …) are answered by
// the JSON final handler installed below (functions/http/frameworkErrors.ts); a handler that cannot
// be built (bad configuration, an adapter that fails to start) or that throws is answered 500
// `internal` here (not by the framework's text crash page), with the details in the logs only.
import { http } from "@google-cloud/functions-framework";
import { workerConfig } from "./config";
import { createLogger } from "./core/logger";
import { createDashboard } from "./dashboard";
import { coordinatorKillSwitchFromEnv } from "./faults";
import { createCoordinatorHandler } from "./handlers/coordinator";
import { createReconcilerHandler } from "./handlers/reconciler/reconcilerHandler";
import { createWorkerHandler, installShutdown, type WorkerHandler } from "./handlers/worker";
import { answerFrameworkErrorsWithJson } from "./http/frameworkErrors";
import type { HttpHandler } from "./http/httpTypes";
import { sendError } from "./http/responses";
import { type HandlerDeps, sharedDeps } from "./runtime";

// Before the framework creates its Express app (it loads this module first, then builds the server).
// Should a framework upgrade change what this relies on, the functions still start (with the
// framework's own error pages) and say so in the logs; test/http/frameworkErrors.test.ts fails.
try {
  answerFrameworkErrorsWithJson();
} catch (err) {
  createLogger({ component: "http" }).error(
    "http.json_errors_unavailable",
    `framework errors will not be answered in JSON: ${(err as Error).message}`,
  );
}

type AnyHandler = (req: never, res: never) => Promise<void>;

/** Builds the handler on first use, so importing this file (to register targets) connects to nothing. */
function lazy<H extends AnyHandler>(component: string, build: (deps: HandlerDeps) => H) {
  const log = createLogger({ component });
  let built: Promise<H> | undefined;
  const get = () => {
    built ??= sharedDeps(component).then(build);
    return built;
  };
  const handler = async (req: Parameters<H>[0], res: Parameters<H>[1]) => {
    try {
      const h = await get();
      await (h as unknown as (a: unknown, b: unknown) => Promise<void>)(req, res);
    } catch (err) {
      // Logged with its stack; the caller gets {"error": {"code": "internal", …}} (500) only.
      sendError(res as never, err, log);
    }
  };
  return { handler, get, started: () => built !== undefined };
}

const coordinator = lazy("coordinator", (deps) =>
  createCoordinatorHandler(deps, {
    dashboard: createDashboard(deps) as HttpHandler,
    // Fault injection (chaos F4 only; undefined unless TALLY_FAULT_COORDINATOR_KILL_TOKEN is set,
    // refused in a deployment).
    crashAt: coordinatorKillSwitchFromEnv(process.env),
  }),
);
const worker = lazy(
  "worker",
  (deps): WorkerHandler => createWorkerHandler({ ...deps, config: workerConfig(deps.config) }),
);
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
