// Outgoing identity (issue #17 §4): a Google-signed OIDC identity token for an audience, fetched from
// the metadata server of the Cloud Run instance the worker runs on, as the instance's service
// account —
//   GET {base}/computeMetadata/v1/instance/service-accounts/default/identity?audience=AUD
//   Metadata-Flavor: Google
// The answer is the JWT itself. Tokens are cached per audience until 5 minutes before their `exp`
// (Google issues them for one hour); concurrent first calls for an audience share one request.
// The base URL is injectable (tests run a fake metadata server on 127.0.0.1); by default it is
// GCE_METADATA_HOST when set (the variable Google's client libraries honour), else
// http://metadata.google.internal.

export const defaultMetadataBase = "http://metadata.google.internal";

export interface IdentityTokenSourceOptions {
  /** Metadata server base URL (scheme, host and port). */
  baseUrl?: string;
  /** Refresh this long before expiry (default 5 min). */
  refreshMarginMs?: number;
  /** Per-request timeout (default 5 s). */
  timeoutMs?: number;
  now?: () => number;
}

export type IdentityTokenSource = (audience: string, signal?: AbortSignal) => Promise<string>;

export class IdentityTokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "IdentityTokenError";
  }
}

export function metadataBaseFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.GCE_METADATA_HOST;
  if (!host) return defaultMetadataBase;
  return /^https?:\/\//.test(host) ? host : `http://${host}`;
}

/** `exp` (ms since the epoch) of a JWT, or null when it cannot be read. */
export function jwtExpiryMs(token: string): number | null {
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

export function createIdentityTokenSource(opts: IdentityTokenSourceOptions = {}): IdentityTokenSource {
  const base = (opts.baseUrl ?? metadataBaseFromEnv()).replace(/\/+$/, "");
  const margin = opts.refreshMarginMs ?? 5 * 60_000;
  const timeoutMs = opts.timeoutMs ?? 5000;
  const now = opts.now ?? Date.now;
  const cache = new Map<string, { token: string; refreshAt: number }>();
  const pending = new Map<string, Promise<string>>();

  async function fetchToken(audience: string, signal?: AbortSignal): Promise<string> {
    const url = `${base}/computeMetadata/v1/instance/service-accounts/default/identity?audience=${encodeURIComponent(audience)}`;
    const signals = [AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])];
    let res: Response;
    try {
      res = await fetch(url, { headers: { "Metadata-Flavor": "Google" }, signal: AbortSignal.any(signals) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      throw new IdentityTokenError(
        `could not reach the metadata server at ${base} for an identity token: ${cause ?? (err as Error).message}`,
      );
    }
    const text = await res.text();
    if (res.status !== 200)
      throw new IdentityTokenError(
        `the metadata server answered ${res.status} for an identity token (audience ${audience}): ${text.slice(0, 200)}`,
      );
    const token = text.trim();
    if (token.split(".").length !== 3)
      throw new IdentityTokenError(`the metadata server's answer for audience ${audience} is not a JWT`);
    // Unreadable expiry: keep it ten minutes (a Google identity token lives an hour).
    const exp = jwtExpiryMs(token) ?? now() + 10 * 60_000 + margin;
    cache.set(audience, { token, refreshAt: exp - margin });
    return token;
  }

  return (audience, signal) => {
    const hit = cache.get(audience);
    if (hit && now() < hit.refreshAt) return Promise.resolve(hit.token);
    let p = pending.get(audience);
    if (!p) {
      p = fetchToken(audience, signal).finally(() => pending.delete(audience));
      pending.set(audience, p);
    }
    return p;
  };
}
