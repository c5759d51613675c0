// The dashboard's public face: the coordinator mounts `createDashboard(deps)` at GET / and
// GET /batches/{id}.
export { createDashboard, type DashboardDeps, type DashboardHandler } from "./createDashboard";
