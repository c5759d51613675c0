// The worker handler's public surface (functions/index.ts registers it as the `worker` target).
export {
  createWorkerHandler,
  type WorkerDeps,
  type WorkerHandler,
  type WorkerHandlerOptions,
} from "./createWorkerHandler";
export { installShutdown } from "./installShutdown";
