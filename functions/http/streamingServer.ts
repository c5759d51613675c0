// A plain node:http server around a Tally handler, with no body parser in front of it: the handler
// reads the request stream itself, so an NDJSON submission of any size flows through in bounded
// memory (the Functions Framework buffers every body first; see requestBody.ts). Used by the local
// stack and the tests for large streamed submissions; the deployed functions run under the
// Functions Framework with the same handler.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createLogger, type Logger } from "../core/logger";
import type { HttpHandler } from "./httpTypes";
import { sendError } from "./responses";

export interface StreamingServer {
  server: Server;
  /** http://127.0.0.1:PORT */
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startStreamingServer(
  handler: HttpHandler,
  opts: { host?: string; port?: number; log?: Logger } = {},
): Promise<StreamingServer> {
  const log = opts.log ?? createLogger({ component: "http" });
  const server = createServer((req, res) => {
    handler(req, res).catch((err) => sendError(res, err, log));
  });
  // A streamed submission of a million items takes minutes; Node's default 5-minute request
  // timeout would cut it. Idle sockets are still closed by keepAliveTimeout.
  server.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  const { port, address } = server.address() as AddressInfo;
  return {
    server,
    port,
    url: `http://${address}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
