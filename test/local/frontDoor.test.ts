// The front door spreads requests over the live backends round-robin, like Cloud Run's, and a
// request to a backend that is gone fails with a 5xx (so Pub/Sub would redeliver it).
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { type Backend, startFrontDoor } from "../../local/frontDoor";

async function backend(name: string): Promise<{ server: http.Server; backend: Backend }> {
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ name, method: req.method, path: req.url, body }));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { server, backend: { name, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` } };
}

describe("front door", async () => {
  const a = await backend("worker 1");
  const b = await backend("worker 2");
  let live: Backend[] = [a.backend, b.backend];
  const door = await startFrontDoor({ backends: () => live, queueMs: 300 });
  afterAll(async () => {
    await door.close();
    a.server.close();
    b.server.close();
  });

  it("forwards method, path and body, round-robin over the live backends", async () => {
    const seen: string[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${door.url}/push?x=${i}`, { method: "POST", body: `{"i":${i}}` });
      expect(res.status).toBe(200);
      const echo = (await res.json()) as { name: string; method: string; path: string; body: string };
      expect(echo).toMatchObject({ method: "POST", path: `/push?x=${i}`, body: `{"i":${i}}` });
      seen.push(echo.name);
    }
    expect(seen.filter((n) => n === "worker 1")).toHaveLength(3);
    expect(seen.filter((n) => n === "worker 2")).toHaveLength(3);
    expect(door.stats().forwarded).toEqual({ "worker 1": 3, "worker 2": 3 });
    expect(door.stats().responses["worker 1"]).toEqual({ "2xx": 3 });
  });

  it("only sends to live backends", async () => {
    live = [b.backend];
    for (let i = 0; i < 3; i++) {
      const echo = (await (await fetch(`${door.url}/`, { method: "POST", body: "{}" })).json()) as {
        name: string;
      };
      expect(echo.name).toBe("worker 2");
    }
  });

  it("holds a request while no worker is live, as Cloud Run does while an instance starts", async () => {
    live = [];
    const pending = fetch(`${door.url}/`, { method: "POST", body: "{}" });
    setTimeout(() => {
      live = [a.backend];
    }, 100);
    const res = await pending;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { name: string }).name).toBe("worker 1");
  });

  it("answers 502 when the chosen backend is gone and 503 when none is live", async () => {
    const gone = await backend("worker 3");
    await new Promise<void>((r) => gone.server.close(() => r()));
    live = [gone.backend];
    const res = await fetch(`${door.url}/`, { method: "POST", body: "{}" });
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("bad_gateway");
    live = [];
    const none = await fetch(`${door.url}/`, { method: "POST", body: "{}" });
    expect(none.status).toBe(503);
    expect(door.stats()).toMatchObject({ backendErrors: 1, noBackend: 1 });
  });
});
