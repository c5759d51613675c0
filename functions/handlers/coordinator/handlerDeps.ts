// The coordinator's dependencies: the shared handler shape from the composition root.
export type { HandlerDeps } from "../../runtime";
