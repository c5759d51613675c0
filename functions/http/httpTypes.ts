// The request/response shapes Tally's handlers accept. Express's Request and Response (what the
// Functions Framework passes) extend Node's IncomingMessage and ServerResponse, so a handler typed
// against these runs both under the framework and under a plain `node:http` server
// (functions/http/streamingServer.ts), which is what lets the coordinator stream request bodies.
import type { IncomingMessage, ServerResponse } from "node:http";

export type HttpRequest = IncomingMessage & {
  /** Set by the Functions Framework's body parsers (an object for JSON, a Buffer for other types). */
  body?: unknown;
  /** Set by the Functions Framework: the whole request body, already read. */
  rawBody?: Buffer;
};

export type HttpResponse = ServerResponse;

export type HttpHandler = (req: HttpRequest, res: HttpResponse) => Promise<void>;

/** Path and query of a request (Express and node:http both keep the original URL in `req.url`). */
export function requestUrl(req: HttpRequest): URL {
  return new URL(req.url ?? "/", "http://localhost");
}
