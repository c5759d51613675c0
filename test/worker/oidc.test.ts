// OIDC verification of push requests, offline: tokens signed with a locally generated RSA key pair,
// verified against injected certificates — by the verifier itself and through the worker handler,
// where anything but a valid token is a 401 and nothing else happens.
//
// Behind Cloud Run the token arrives with its signature segment replaced by
// `SIGNATURE_REMOVED_BY_GOOGLE` (Cloud Run's IAM check verified it; see functions/auth/oidc.ts):
// such a token is accepted on its claims alone, through the worker's and the reconciler's HTTP
// handlers, and every claim is still checked; any other bad signature is still refused.
import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createOidcVerifier, OidcVerificationError, removedSignatureMarker } from "../../functions/auth/oidc";
import { createWorkerHandler } from "../../functions/handlers/worker";
import { deadLetterEnvelope, startReconcilerHarness } from "../reconciler/support/reconcilerHarness";
import { testFirestore, testPubSub, uniqueProjectId } from "../support/cloud";
import {
  buildDeps,
  envelope,
  post,
  type ServedWorker,
  serveWorker,
  submitBatch,
  tempDataDir,
  testConfig,
} from "./support/workerHarness";

const audience = "https://wt-worker-abc123-uc.a.run.app/";
const pushAccount = "wt-push@tally-test.iam.gserviceaccount.com";
const kid = "local-test-key";
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
const certificates = async () => ({ [kid]: publicKey.export({ type: "spki", format: "pem" }).toString() });

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
function token(
  claims: Record<string, unknown> = {},
  opts: { alg?: string; key?: KeyObject | null; kid?: string } = {},
): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: opts.alg ?? "RS256", kid: opts.kid ?? kid, typ: "JWT" };
  const payload = {
    iss: "https://accounts.google.com",
    aud: audience,
    sub: "1234567890",
    email: pushAccount,
    email_verified: true,
    iat: now - 10,
    exp: now + 3600,
    ...claims,
  };
  const signed = `${b64(header)}.${b64(payload)}`;
  const key = opts.key === undefined ? privateKey : opts.key;
  const signature = key ? sign("RSA-SHA256", Buffer.from(signed), key).toString("base64url") : "";
  return `${signed}.${signature}`;
}

/** The token as Cloud Run forwards it after its IAM check: same header and claims, signature replaced. */
function stripped(jwt: string, signature = removedSignatureMarker): string {
  const [h, p] = jwt.split(".");
  return `${h}.${p}.${signature}`;
}
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Stripped tokens whose claims are wrong: refused although Cloud Run passed them on. */
const refusedStripped: Array<[string, string, string]> = [
  [
    "the wrong audience",
    `Bearer ${stripped(token({ aud: "https://someone-else.a.run.app/" }))}`,
    "wrong_audience",
  ],
  [
    "the wrong email",
    `Bearer ${stripped(token({ email: "intruder@other.iam.gserviceaccount.com" }))}`,
    "wrong_email",
  ],
  ["an unverified email", `Bearer ${stripped(token({ email_verified: false }))}`, "email_not_verified"],
  [
    "an expired token",
    `Bearer ${stripped(token({ iat: nowSeconds() - 7200, exp: nowSeconds() - 3600 }))}`,
    "expired",
  ],
  [
    "a token issued in the future (beyond the clock skew)",
    `Bearer ${stripped(token({ iat: nowSeconds() + 3600, exp: nowSeconds() + 7200 }))}`,
    "not_yet_valid",
  ],
  ["the wrong issuer", `Bearer ${stripped(token({ iss: "https://evil.example.com" }))}`, "wrong_issuer"],
  // Decision: Cloud Run replaces only the signature; a header changed to `alg: none` was not
  // forwarded by Cloud Run as it is, so the marker does not excuse it.
  [
    "the marker on a header changed to alg none",
    `Bearer ${stripped(token({}, { alg: "none", key: null }))}`,
    "unsupported_algorithm",
  ],
  // Anything but exactly the marker must verify against the keys.
  ["some other garbage signature", `Bearer ${stripped(token(), "not-a-signature")}`, "bad_signature"],
  [
    "a near miss of the marker",
    `Bearer ${stripped(token(), "SIGNATURE_REMOVED_BY_GOOGLE_")}`,
    "bad_signature",
  ],
  ["the marker in lower case", `Bearer ${stripped(token(), "signature_removed_by_google")}`, "bad_signature"],
  ["an empty signature", `Bearer ${stripped(token(), "")}`, "bad_signature"],
  ["a stripped token with a fourth segment", `Bearer ${stripped(token())}.extra`, "malformed_token"],
  [
    "a stripped token whose payload is not JSON",
    `Bearer ${b64({ alg: "RS256" })}.bm90LWpzb24.${removedSignatureMarker}`,
    "malformed_token",
  ],
];

const refused: Array<[string, string | undefined, string]> = [
  ["no Authorization header", undefined, "missing_token"],
  ["a non-Bearer scheme", `Basic ${Buffer.from("a:b").toString("base64")}`, "missing_token"],
  ["the wrong audience", `Bearer ${token({ aud: "https://someone-else.a.run.app/" })}`, "wrong_audience"],
  ["the wrong issuer", `Bearer ${token({ iss: "https://evil.example.com" })}`, "wrong_issuer"],
  ["the wrong email", `Bearer ${token({ email: "intruder@other.iam.gserviceaccount.com" })}`, "wrong_email"],
  ["an unverified email", `Bearer ${token({ email_verified: false })}`, "email_not_verified"],
  [
    "an expired token",
    `Bearer ${token({ iat: Math.floor(Date.now() / 1000) - 7200, exp: Math.floor(Date.now() / 1000) - 3600 })}`,
    "expired",
  ],
  [
    "an unsigned token (alg none)",
    `Bearer ${token({}, { alg: "none", key: null })}`,
    "unsupported_algorithm",
  ],
  ["a token signed by another key", `Bearer ${token({}, { key: other.privateKey })}`, "bad_signature"],
  ["an unknown key id", `Bearer ${token({}, { kid: "rotated-away" })}`, "unknown_key"],
  ["a malformed token", "Bearer not.a-jwt", "malformed_token"],
];

describe("the OIDC verifier", () => {
  const verify = createOidcVerifier({ audience, allowedEmails: [pushAccount], certificates });

  it("accepts a valid Google-shaped token (either issuer spelling)", async () => {
    await expect(verify(`Bearer ${token()}`)).resolves.toMatchObject({ email: pushAccount, audience });
    await expect(verify(`Bearer ${token({ iss: "accounts.google.com" })}`)).resolves.toMatchObject({
      email: pushAccount,
    });
  });

  it("accepts a token whose signature Cloud Run removed, on its claims alone (either issuer spelling)", async () => {
    const fetched = vi.fn(certificates);
    const behindCloudRun = createOidcVerifier({
      audience,
      allowedEmails: [pushAccount],
      certificates: fetched,
    });
    await expect(behindCloudRun(`Bearer ${stripped(token())}`)).resolves.toEqual({
      email: pushAccount,
      subject: "1234567890",
      audience,
      expiresAt: expect.any(Number),
      signature: "removed_by_cloud_run",
    });
    await expect(
      behindCloudRun(`Bearer ${stripped(token({ iss: "accounts.google.com" }))}`),
    ).resolves.toMatchObject({ email: pushAccount, signature: "removed_by_cloud_run" });
    // Nothing to verify, so no certificates fetched; a signed token still goes through the keys.
    expect(fetched).not.toHaveBeenCalled();
    await expect(behindCloudRun(`Bearer ${token()}`)).resolves.toMatchObject({ signature: "verified" });
    expect(fetched).toHaveBeenCalledTimes(1);
  });

  it.each(refusedStripped)("refuses a stripped token with %s", async (_what, header, reason) => {
    const err = await verify(header).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OidcVerificationError);
    expect((err as OidcVerificationError).reason).toBe(reason);
  });

  it.each(refused)("refuses %s", async (_what, header, reason) => {
    const err = await verify(header).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OidcVerificationError);
    expect((err as OidcVerificationError).reason).toBe(reason);
    // The token itself never appears in the message (it would end up in logs).
    if (header) expect((err as Error).message).not.toContain(header.slice(7, 40));
  });
});

describe("the worker with OIDC configured", () => {
  const projectId = uniqueProjectId("oidc");
  const db = testFirestore(projectId);
  const pubsub = testPubSub(projectId);
  const data = tempDataDir();
  const config = testConfig(projectId, data.dir, {
    TALLY_OIDC_AUDIENCE: audience,
    TALLY_OIDC_SERVICE_ACCOUNT: pushAccount,
  });
  let deps: Awaited<ReturnType<typeof buildDeps>>;
  let worker: ServedWorker;

  beforeAll(async () => {
    deps = await buildDeps(config, db, pubsub);
    worker = await serveWorker(deps, { oidcCertificates: certificates });
  });
  afterAll(async () => {
    await worker?.close();
    await deps?.close();
    await pubsub.close();
    await db.terminate();
    data.remove();
  });

  it("answers 401 to every bad token and touches nothing", async () => {
    const { batchId } = await submitBatch(deps, "demo", [{ itemId: "guarded", payload: {} }], {
      publish: false,
    });
    const lease = vi.spyOn(deps.ledger, "leaseItem");
    for (const [what, header, reason] of refused) {
      const res = await post(
        worker.url,
        envelope({ batchId, itemId: "guarded", generation: "1" }),
        header ? { authorization: header } : {},
      );
      expect(res.status, what).toBe(401);
      expect(res.body, what).toMatchObject({
        error: { code: "unauthenticated", details: [{ path: "authorization", problem: reason }] },
      });
    }
    expect(lease).not.toHaveBeenCalled();
    lease.mockRestore();
    expect(await deps.ledger.getItem(batchId, "guarded")).toMatchObject({ status: "pending", attempt: 0 });
    expect(worker.handler.stats.unauthenticated).toBe(refused.length);
    expect(worker.handler.stats.deliveries).toBe(0);
  });

  it("processes a delivery with a valid token", async () => {
    const { batchId } = await submitBatch(deps, "demo", [{ itemId: "welcome", payload: { value: 1 } }], {
      publish: false,
    });
    const res = await post(worker.url, envelope({ batchId, itemId: "welcome", generation: "1" }), {
      authorization: `Bearer ${token()}`,
    });
    expect(res).toMatchObject({ status: 200, body: { outcome: "succeeded" } });
    expect(await deps.ledger.getItem(batchId, "welcome")).toMatchObject({
      status: "succeeded",
      result: { value: 1 },
    });
  });

  it("processes a delivery whose token Cloud Run stripped of its signature", async () => {
    const { batchId } = await submitBatch(deps, "demo", [{ itemId: "stripped", payload: { value: 2 } }], {
      publish: false,
    });
    const res = await post(worker.url, envelope({ batchId, itemId: "stripped", generation: "1" }), {
      authorization: `Bearer ${stripped(token())}`,
    });
    expect(res).toMatchObject({ status: 200, body: { acknowledged: true, outcome: "succeeded" } });
    expect(await deps.ledger.getItem(batchId, "stripped")).toMatchObject({
      status: "succeeded",
      result: { value: 2 },
    });
  });

  it("answers 401 (JSON) to every stripped token with a wrong claim, and to every other bad signature", async () => {
    const { batchId } = await submitBatch(deps, "demo", [{ itemId: "guarded-2", payload: {} }], {
      publish: false,
    });
    const lease = vi.spyOn(deps.ledger, "leaseItem");
    const before = worker.handler.stats.unauthenticated;
    for (const [what, header, reason] of refusedStripped) {
      const res = await fetch(worker.url, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: header },
        body: JSON.stringify(envelope({ batchId, itemId: "guarded-2", generation: "1" })),
      });
      expect(res.status, what).toBe(401);
      expect(res.headers.get("content-type"), what).toMatch(/^application\/json/);
      expect(await res.json(), what).toEqual({
        error: {
          code: "unauthenticated",
          message: expect.any(String),
          details: [{ path: "authorization", problem: reason }],
        },
      });
    }
    expect(lease).not.toHaveBeenCalled();
    lease.mockRestore();
    expect(worker.handler.stats.unauthenticated - before).toBe(refusedStripped.length);
    expect(await deps.ledger.getItem(batchId, "guarded-2")).toMatchObject({ status: "pending", attempt: 0 });
  });

  it("refuses to start with an audience but no service account to expect", () => {
    const bad = testConfig(projectId, data.dir, { TALLY_OIDC_AUDIENCE: audience });
    expect(() => createWorkerHandler({ ...deps, config: bad })).toThrow(/TALLY_OIDC_SERVICE_ACCOUNT/);
  });
});

describe("the reconciler with OIDC configured, behind Cloud Run", () => {
  const scheduler = "rt-scheduler@tally-test.iam.gserviceaccount.com";
  const deadLetterPush = "rt-dead-letter-push@tally-test.iam.gserviceaccount.com";
  let h: Awaited<ReturnType<typeof startReconcilerHarness>>;
  beforeAll(async () => {
    h = await startReconcilerHarness({
      env: { TALLY_OIDC_AUDIENCE: audience, TALLY_OIDC_SERVICE_ACCOUNT: `${scheduler}, ${deadLetterPush}` },
      handler: { oidcCertificates: certificates },
    });
  });
  afterAll(() => h?.close());

  it("accepts stripped tokens on /reconcile (Cloud Scheduler) and /dead-letter (the dead-letter push)", async () => {
    await h.createBatch("stripped-b", 1);
    const tick = await h.post(
      "/reconcile",
      {},
      { authorization: `Bearer ${stripped(token({ email: scheduler }))}` },
    );
    expect(tick.status, JSON.stringify(tick.body)).toBe(200);
    expect(tick.body).toMatchObject({ errors: 0 });
    const dl = await h.deadLetter(
      deadLetterEnvelope({ batchId: "stripped-b", itemId: "i0", generation: "1" }),
      {
        authorization: `Bearer ${stripped(token({ email: deadLetterPush }))}`,
      },
    );
    expect(dl.status, JSON.stringify(dl.body)).toBe(200);
    expect((await h.ledger.getItem("stripped-b", "i0"))?.error?.kind).toBe("dead_lettered");
  });

  it("answers 401 (JSON) on both endpoints to stripped tokens with a wrong claim and to other bad signatures", async () => {
    await h.createBatch("guarded-b", 1);
    const summariesBefore = h.logs.filter((l) => l.event === "reconcile.summary").length;
    for (const [what, header, reason] of refusedStripped) {
      // The wrong email of the shared cases is no allowed caller of the reconciler either; the
      // others carry the push account, so they are re-issued for the scheduler where that matters.
      const asScheduler = header.replace(
        header.split(".")[1]!,
        rewriteEmail(header.split(".")[1]!, pushAccount, scheduler),
      );
      for (const path of ["/reconcile", "/dead-letter"]) {
        const body =
          path === "/reconcile"
            ? {}
            : deadLetterEnvelope({ batchId: "guarded-b", itemId: "i0", generation: "1" });
        const res = await fetch(`${h.url}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: asScheduler },
          body: JSON.stringify(body),
        });
        expect(res.status, `${path}: ${what}`).toBe(401);
        expect(res.headers.get("content-type"), `${path}: ${what}`).toMatch(/^application\/json/);
        expect(await res.json(), `${path}: ${what}`).toEqual({
          error: {
            code: "unauthenticated",
            message: expect.any(String),
            details: [{ path: "authorization", problem: reason }],
          },
        });
      }
    }
    expect(h.logs.filter((l) => l.event === "reconcile.summary")).toHaveLength(summariesBefore);
    expect((await h.ledger.getItem("guarded-b", "i0"))?.status).toBe("pending");
  });
});

/** A payload segment with one email swapped for another (the token stays unsigned/stripped as it was). */
function rewriteEmail(payloadSegment: string, from: string, to: string): string {
  let claims: Record<string, unknown>;
  try {
    claims = JSON.parse(Buffer.from(payloadSegment, "base64url").toString("utf8"));
  } catch {
    return payloadSegment; // a case whose payload is deliberately not JSON
  }
  if (claims.email !== from) return payloadSegment;
  return b64({ ...claims, email: to });
}
