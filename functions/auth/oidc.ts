// Verification of the Google-signed OIDC tokens that Pub/Sub push subscriptions and Cloud Scheduler
// attach (`Authorization: Bearer <JWT>`), shared by the worker and the reconciler (DESIGN.md §3).
// Cloud Run IAM already authenticates callers; this second check pins the caller to the expected
// service account and audience, so a token minted for another service is refused.
//
// Checks: RS256 only (an unsigned `alg: none` token or any other algorithm is refused), a known
// key id, the signature, issuer (accounts.google.com), audience, expiry and issue time (with a
// small clock skew), the `email` claim among the allowed service accounts and `email_verified`.
// Certificates come from Google's federated sign-on endpoint (cached by google-auth-library per
// its Cache-Control) unless injected, which lets tests verify offline against a local key pair.
//
// Tokens whose signature Cloud Run removed. A service that requires authentication (no `allUsers`
// invoker; ours all do) has its caller's Google-signed ID token checked by Cloud Run's IAM invoker
// check, and Cloud Run then forwards the request to the container with the token's signature
// segment replaced by the literal `SIGNATURE_REMOVED_BY_GOOGLE` — Google's Cloud Run
// troubleshooting guide, section "signature removed":
// https://cloud.google.com/run/docs/troubleshooting#signature-removed
// Every Pub/Sub push and every Cloud Scheduler call therefore reaches the worker and the
// reconciler without a signature to verify. Such a token is accepted on its claims alone — Cloud
// Run verified the signature — and every claim check above still applies (issuer, audience,
// allowed email, email_verified, exp and iat with the clock skew). Its header must still say
// RS256: Cloud Run replaces only the signature segment and Google signs ID tokens with RS256, so a
// header saying anything else (`alg: none` included) is not a token Cloud Run passed on as it is.
// Any other signature — missing, empty, garbage, a near miss of the marker — must verify against
// Google's keys. The marker is only trustworthy behind Cloud Run IAM: the stack never grants
// `roles/run.invoker` to allUsers (infra/policy/rules.ts) and gives worker and reconciler internal
// ingress only (infra/services.ts).
import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { OAuth2Client } from "google-auth-library";

export const googleIssuers = ["accounts.google.com", "https://accounts.google.com"] as const;

/** What Cloud Run puts in place of the signature of a token its IAM check has verified. */
export const removedSignatureMarker = "SIGNATURE_REMOVED_BY_GOOGLE";

/** Key id → PEM (X.509 certificate or SPKI public key). */
export type CertificateSource = () => Promise<Record<string, string>>;

export interface OidcVerifierOptions {
  audience: string;
  /** Service-account emails allowed to call (the push subscription's or scheduler job's). */
  allowedEmails: string[];
  /** Defaults to Google's published certificates. */
  certificates?: CertificateSource;
  /** Epoch ms; defaults to Date.now. */
  now?: () => number;
  clockSkewSeconds?: number;
}

export interface VerifiedCaller {
  email: string;
  subject: string;
  audience: string;
  expiresAt: number;
  /** `verified`: checked against Google's keys here; `removed_by_cloud_run`: checked by Cloud Run IAM. */
  signature: "verified" | "removed_by_cloud_run";
}

/** Why a token was refused; the message never contains the token itself. */
export class OidcVerificationError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "OidcVerificationError";
  }
}

export type OidcVerifier = (authorizationHeader: string | undefined) => Promise<VerifiedCaller>;

export function googleCertificates(): CertificateSource {
  const client = new OAuth2Client();
  return async () => {
    const { certs } = await client.getFederatedSignonCertsAsync();
    const pems: Record<string, string> = {};
    for (const [kid, cert] of Object.entries(certs)) if (typeof cert === "string") pems[kid] = cert;
    return pems;
  };
}

const fail = (reason: string, message: string): never => {
  throw new OidcVerificationError(reason, message);
};

function decodeSegment(segment: string, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, "base64url").toString("utf8"));
    if (value && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // falls through to the error below
  }
  return fail("malformed_token", `the token's ${what} is not base64url-encoded JSON`);
}

export function createOidcVerifier(opts: OidcVerifierOptions): OidcVerifier {
  if (!opts.audience) throw new Error("OIDC verification needs an audience");
  if (opts.allowedEmails.length === 0)
    throw new Error("OIDC verification needs at least one allowed service-account email");
  const certificates = opts.certificates ?? googleCertificates();
  const now = opts.now ?? Date.now;
  const skew = opts.clockSkewSeconds ?? 60;
  const keyCache = new Map<string, KeyObject>();

  return async (header) => {
    if (!header) return fail("missing_token", "the request has no Authorization header");
    const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
    if (!match) return fail("missing_token", "the Authorization header is not a Bearer token");
    const segments = match[1]!.split(".");
    if (segments.length !== 3) return fail("malformed_token", "the token does not have three segments");
    const [headerPart, payloadPart, signaturePart] = segments as [string, string, string];
    const jose = decodeSegment(headerPart, "header");
    const claims = decodeSegment(payloadPart, "payload");

    if (jose.alg !== "RS256")
      fail("unsupported_algorithm", `the token's algorithm is ${String(jose.alg)}; only RS256 is accepted`);
    // Exactly the marker: Cloud Run verified the signature before forwarding (see the top of this
    // file); the claims below are still checked. Anything else must verify here.
    const strippedByCloudRun = signaturePart === removedSignatureMarker;
    if (!strippedByCloudRun) {
      if (typeof jose.kid !== "string") fail("unknown_key", "the token names no key id");
      const kid = jose.kid as string;
      let key = keyCache.get(kid);
      if (!key) {
        const pem = (await certificates())[kid];
        if (!pem)
          return fail("unknown_key", `the token's key id ${kid} is not among the signer's certificates`);
        key = createPublicKey(pem);
        // Google rotates its keys every few days: a small cache of the recent ones is plenty.
        if (keyCache.size >= 16) keyCache.clear();
        keyCache.set(kid, key);
      }
      const signature = Buffer.from(signaturePart, "base64url");
      const signed = Buffer.from(`${headerPart}.${payloadPart}`);
      if (signature.length === 0 || !verify("RSA-SHA256", signed, key, signature))
        fail("bad_signature", "the token's signature does not verify");
    }

    if (!googleIssuers.includes(claims.iss as (typeof googleIssuers)[number]))
      fail("wrong_issuer", `the token's issuer is ${String(claims.iss)}; expected accounts.google.com`);
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!audiences.includes(opts.audience))
      fail("wrong_audience", `the token's audience is ${String(claims.aud)}; expected ${opts.audience}`);
    const nowSeconds = now() / 1000;
    const exp = Number(claims.exp);
    const iat = Number(claims.iat);
    if (!Number.isFinite(exp) || !Number.isFinite(iat))
      fail("malformed_token", "the token lacks a numeric exp or iat claim");
    if (exp + skew < nowSeconds)
      fail("expired", `the token expired at ${new Date(exp * 1000).toISOString()}`);
    if (iat - skew > nowSeconds) fail("not_yet_valid", "the token was issued in the future");
    if (typeof claims.email !== "string" || !opts.allowedEmails.includes(claims.email))
      fail("wrong_email", `the token's email ${String(claims.email)} is not an allowed caller`);
    if (claims.email_verified !== true && claims.email_verified !== "true")
      fail("email_not_verified", "the token's email is not verified");
    return {
      email: claims.email as string,
      subject: String(claims.sub ?? ""),
      audience: opts.audience,
      expiresAt: exp * 1000,
      signature: strippedByCloudRun ? "removed_by_cloud_run" : "verified",
    };
  };
}

/** Parses `TALLY_OIDC_SERVICE_ACCOUNT` (one email, or several separated by commas). */
export function parseAllowedEmails(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
