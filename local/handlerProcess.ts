// One handler process of the local stack: registers the Functions Framework targets
// (functions/index.ts, exactly what Cloud Run loads) and serves the target named by TALLY_TARGET on
// 127.0.0.1:PORT. Started by the supervisor (processSupervisor.ts), which it tells over IPC once it
// listens. The Functions Framework's own CLI is not used because it installs a SIGTERM handler that
// exits at once, which would cut the worker's graceful shutdown short.
import type { AddressInfo } from "node:net";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import "../functions/index";

const target = process.env.TALLY_TARGET;
const port = Number(process.env.PORT);
if (!target || !Number.isInteger(port)) {
  console.error("handlerProcess needs TALLY_TARGET and PORT");
  process.exit(2);
}

const server = getTestServer(target);
// Push requests may run up to the ack deadline; Node's default request timeouts must not cut them.
server.requestTimeout = 0;
server.setTimeout(0);

// Who shuts down gracefully on SIGTERM: the worker registers its own handler (it releases in-flight
// items); for the others, stop accepting and let in-flight requests finish, as Cloud Run allows.
if (process.listenerCount("SIGTERM") === 0) {
  process.once("SIGTERM", () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 9_000).unref();
  });
}

// The stack went away without stopping us (it was killed): shut down as if Cloud Run stopped us.
process.on("disconnect", () => process.kill(process.pid, "SIGTERM"));

server.listen(port, "127.0.0.1", () => {
  const actual = (server.address() as AddressInfo).port;
  process.send?.({ kind: "listening", port: actual });
});
