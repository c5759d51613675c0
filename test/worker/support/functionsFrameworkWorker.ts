// A worker as it runs deployed: a Functions Framework source module registering the `worker` target,
// served by the framework's own CLI in a child process (see childWorker.ts). It wires SIGTERM with
// `installShutdown(..., { exclusive: true })`, which displaces the framework's exit-at-once handler.
import { http } from "@google-cloud/functions-framework";
import { createWorkerHandler, installShutdown, type WorkerHandler } from "../../../functions/handlers/worker";
import { createDeps } from "../../../functions/runtime";
import { testPipelineLookup } from "./testPipelines";

let handler: Promise<WorkerHandler> | undefined;
const getHandler = () => {
  handler ??= createDeps("worker").then((deps) => {
    const h = createWorkerHandler(deps, {
      pipelines: testPipelineLookup,
      instanceId: `child-${process.pid}`,
    });
    installShutdown(h, { exclusive: true, log: deps.log });
    return h;
  });
  return handler;
};
// Built at load so SIGTERM is wired before the first delivery.
void getHandler();

http("worker", async (req, res) => (await getHandler())(req, res));
