// OIDC verification of push requests, offline: tokens signed with a locally generated RSA key pair,
// verified against injected certificates — by the verifier itself and through the worker handler,
// where anything but a valid token is a 401 and nothing else happens.
import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createOidcVerifier, OidcVerificationError } from "../../functions/auth/oidc";
import { createWorkerHandler } from "../../functions/handlers/worker";
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

  it("refuses to start with an audience but no service account to expect", () => {
    const bad = testConfig(projectId, data.dir, { TALLY_OIDC_AUDIENCE: audience });
    expect(() => createWorkerHandler({ ...deps, config: bad })).toThrow(/TALLY_OIDC_SERVICE_ACCOUNT/);
  });
});
