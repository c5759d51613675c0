// The reconciler's HTTP surface: routes, methods, the optional reconcile body (bad input is refused
// with every problem named and changes nothing), and OIDC verification when configured — a missing
// or wrong token is 401 on both endpoints, a valid one from an allowed caller gets through.
import { generateKeyPairSync, sign } from "node:crypto";
import { mkdirSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import {
  deadLetterEnvelope,
  type ReconcilerHarness,
  startReconcilerHarness,
} from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("reconciler HTTP", () => {
  it("routes, methods and the optional reconcile body", async () => {
    h = await startReconcilerHarness();
    await h.createBatch("b", 1, { at: Date.now() - 60 * 60_000 }); // a stale pending item

    expect((await fetch(`${h.url}/healthz`)).status).toBe(200);
    const get = await fetch(`${h.url}/reconcile`);
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    const missing = await h.post("/nope", {});
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("not_found");

    const bad = await h.tick({ pageSize: 0, maxPagesPerSweep: "many", dryRun: true });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("invalid_argument");
    const paths = bad.body.error.details.map((d: { path: string }) => d.path).sort();
    expect(paths).toEqual(["dryRun", "maxPagesPerSweep", "pageSize"]);
    const notJson = await h.post("/reconcile", "tick please", { "content-type": "text/plain" });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.details[0]).toMatchObject({ path: "body", problem: "is not valid JSON" });
    // Refused requests did nothing.
    expect(h.logs.filter((l) => l.event === "reconcile.summary")).toHaveLength(0);
    await h.doorbellsSettled();
    expect(h.doorbells).toHaveLength(0);

    // Cloud Scheduler's call: no body (or `{}`) — runs a tick and logs its summary.
    const ok = await h.tick();
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ stalePending: { republished: 1 }, errors: 0 });
    expect(typeof ok.body.durationMs).toBe("number");
    const logged = h.logs.find((l) => l.event === "reconcile.summary");
    expect(logged).toMatchObject({ severity: "INFO", stalePending: { republished: 1 } });
    const small = await h.tick({ pageSize: 10 });
    expect(small.status).toBe(200);
  });

  it("a failed action is logged, does not stop the rest of the tick, and answers 500 for a retry", async () => {
    h = await startReconcilerHarness();
    await h.createBatch("done", 2);
    await h.finishItems("done");
    await h.createBatch("lost", 1, { at: Date.now() - 60 * 60_000 });
    mkdirSync(h.duckdbPath, { recursive: true }); // the results file cannot be opened: exports fail

    const r = await h.tick();
    expect(r.status).toBe(500);
    expect(r.body.error.code).toBe("reconcile_incomplete");
    expect(r.body.error.details[0].path).toBe("finalizations/done");
    // The other sweeps still ran.
    await h.waitForDoorbells("lost", ["i0"]);
    const summary = h.logs.find((l) => l.event === "reconcile.summary");
    expect(summary).toMatchObject({ severity: "ERROR", errors: 1, stalePending: { republished: 1 } });
    expect(h.logs.some((l) => l.event === "reconcile.error" && l.batchId === "done")).toBe(true);
    expect((await h.ledger.getBatch("done"))?.status).toBe("finalizing"); // re-run once stale
  });

  it("verifies OIDC tokens on both endpoints when configured", async () => {
    const audience = "https://rt-reconciler-abc123-uc.a.run.app";
    const scheduler = "rt-scheduler@tally-test.iam.gserviceaccount.com";
    const deadLetterPush = "rt-dead-letter-push@tally-test.iam.gserviceaccount.com";
    const kid = "local-key";
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const token = (email: string, aud = audience) => {
      const now = Math.floor(Date.now() / 1000);
      const signed = `${b64({ alg: "RS256", kid, typ: "JWT" })}.${b64({
        iss: "https://accounts.google.com",
        aud,
        sub: "1",
        email,
        email_verified: true,
        iat: now - 5,
        exp: now + 600,
      })}`;
      return `Bearer ${signed}.${sign("RSA-SHA256", Buffer.from(signed), privateKey).toString("base64url")}`;
    };
    h = await startReconcilerHarness({
      env: { TALLY_OIDC_AUDIENCE: audience, TALLY_OIDC_SERVICE_ACCOUNT: `${scheduler}, ${deadLetterPush}` },
      handler: { oidcCertificates: async () => ({ [kid]: pem }) },
    });
    await h.createBatch("b", 1);

    const none = await h.tick();
    expect(none.status).toBe(401);
    expect(none.body.error).toMatchObject({
      code: "unauthenticated",
      details: [{ path: "authorization", problem: "missing_token" }],
    });
    const wrongAudience = await h.post(
      "/reconcile",
      {},
      { authorization: token(scheduler, "https://other") },
    );
    expect(wrongAudience.status).toBe(401);
    const intruder = await h.post(
      "/reconcile",
      {},
      { authorization: token("intruder@x.iam.gserviceaccount.com") },
    );
    expect(intruder.status).toBe(401);
    const env = deadLetterEnvelope({ batchId: "b", itemId: "i0", generation: "1" });
    const dlNone = await h.deadLetter(env);
    expect(dlNone.status).toBe(401);
    expect((await h.ledger.getItem("b", "i0"))?.status).toBe("pending"); // refused: nothing changed
    expect(h.logs.filter((l) => l.event === "reconcile.summary")).toHaveLength(0);

    expect((await h.post("/reconcile", {}, { authorization: token(scheduler) })).status).toBe(200);
    const dl = await h.deadLetter(env, { authorization: token(deadLetterPush) });
    expect(dl.status).toBe(200);
    expect((await h.ledger.getItem("b", "i0"))?.error?.kind).toBe("dead_lettered");
  });
});
