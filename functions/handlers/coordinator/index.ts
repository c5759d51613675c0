// The coordinator handler (issue #3): see coordinatorHandler.ts and docs/api.md.
export { createCoordinatorHandler } from "./coordinatorHandler";
export type { CoordinatorOptions } from "./coordinatorOptions";
export type { HandlerDeps } from "./handlerDeps";
