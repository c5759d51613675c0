// A front end that does to request sizes what Cloud Run does (DESIGN.md §7): an HTTP/1 request whose
// body is over 32 MiB is refused with 413 and never reaches the service; everything else is
// forwarded as it is. Put in front of the coordinator served by the Functions Framework, it makes a
// test meet the limits of the deployed path.
import http from "node:http";
import type { AddressInfo } from "node:net";

export const cloudRunMaxRequestBytes = 32 * 1024 * 1024;

export interface CloudRunFront {
  url: string;
  /** Requests refused with 413, and forwarded. */
  stats: { refused: number; forwarded: number; largestForwardedBytes: number };
  close(): Promise<void>;
}

export async function startCloudRunFront(
  upstream: string,
  maxBytes = cloudRunMaxRequestBytes,
): Promise<CloudRunFront> {
  const target = new URL(upstream);
  const stats = { refused: 0, forwarded: 0, largestForwardedBytes: 0 };
  const refuse = (res: http.ServerResponse) => {
    stats.refused++;
    const body = "<html><body><h1>413 Request Entity Too Large</h1></body></html>";
    res.writeHead(413, {
      "content-type": "text/html",
      "content-length": Buffer.byteLength(body),
      connection: "close",
    });
    res.end(body);
  };
  const server = http.createServer((req, res) => {
    const declared = Number(req.headers["content-length"] ?? Number.NaN);
    if (declared > maxBytes) {
      req.resume(); // let the client finish sending (it reads the answer after its body)
      refuse(res);
      return;
    }
    const up = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on("error", () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    let seen = 0;
    req.on("data", (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > maxBytes) {
        // A chunked body that turned out too large: the service never gets it whole.
        up.destroy();
        req.unpipe(up);
        req.resume();
        if (!res.headersSent) refuse(res);
      }
    });
    req.on("end", () => {
      if (seen <= maxBytes) {
        stats.forwarded++;
        stats.largestForwardedBytes = Math.max(stats.largestForwardedBytes, seen);
      }
    });
    req.on("aborted", () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
