// The reconciler's HTTP function (DESIGN.md §3): `POST /reconcile` from Cloud Scheduler runs one
// tick and answers its summary; `POST /dead-letter` receives the dead-letter subscription's pushes;
// `GET /healthz` for liveness. When OIDC is configured (TALLY_OIDC_AUDIENCE), both POST endpoints
// require a Google-signed token for an allowed service account and refuse anything else with 401.
import type { Request, Response } from "@google-cloud/functions-framework";
import {
  type CertificateSource,
  createOidcVerifier,
  OidcVerificationError,
  type OidcVerifier,
  parseAllowedEmails,
} from "../../auth/oidc";
import { invalidArgument, notFound, TallyError } from "../../core/errors";
import { traceField } from "../../core/logger";
import { sendError, sendJson } from "../../http/responses";
import { decodePushRequest, type PushDelivery } from "../../pubsub/pushDelivery";
import type { HandlerDeps } from "../../runtime";
import { deadLetterAttributes, receiveDeadLetter } from "./deadLetterReceiver";
import { parseReconcileRequest } from "./reconcileRequest";
import { reconcileTick } from "./reconcileTick";

export interface ReconcilerHandlerOptions {
  /** Certificates for OIDC verification (default: Google's); tests inject a local key pair's. */
  oidcCertificates?: CertificateSource;
}

export type ReconcilerHandler = (req: Request, res: Response) => Promise<void>;

export function createReconcilerHandler(
  deps: HandlerDeps,
  opts: ReconcilerHandlerOptions = {},
): ReconcilerHandler {
  const { topology } = deps.config;
  const verifyCaller = verifierFromConfig(deps, opts);
  const routes: Record<string, (req: Request, res: Response, log: HandlerDeps["log"]) => Promise<void>> = {
    [topology.reconcilePath]: (req, res, log) => handleReconcile(deps, req, res, log),
    [topology.deadLetterPath]: (req, res, log) => handleDeadLetter(deps, req, res, log),
  };

  return async (req, res) => {
    const log = deps.log.child(traceField(req.get("x-cloud-trace-context"), deps.config.projectId));
    try {
      if (req.path === "/healthz") {
        if (req.method !== "GET") throw methodNotAllowed(res, req, "GET");
        return sendJson(res, 200, { status: "ok" });
      }
      const route = routes[req.path];
      if (!route)
        throw notFound(
          `no route ${req.method} ${req.path}: expected POST ${topology.reconcilePath} or POST ${topology.deadLetterPath}`,
        );
      if (req.method !== "POST") throw methodNotAllowed(res, req, "POST");
      if (verifyCaller) {
        try {
          await verifyCaller(req.get("authorization"));
        } catch (err) {
          if (!(err instanceof OidcVerificationError)) throw err;
          log.warn("auth.rejected", `${req.path}: caller refused: ${err.message}`, {
            path: req.path,
            reason: err.reason,
          });
          throw new TallyError(401, "unauthenticated", err.message, [
            { path: "authorization", problem: err.reason },
          ]);
        }
      }
      await route(req, res, log);
    } catch (err) {
      // TallyErrors answer their status; anything else is logged at ERROR and answered 500.
      sendError(res, err, log);
    }
  };
}

/** Same rules as the worker: on when TALLY_OIDC_AUDIENCE is set, and then a caller must be named. */
function verifierFromConfig(deps: HandlerDeps, opts: ReconcilerHandlerOptions): OidcVerifier | null {
  const audience = deps.config.env.TALLY_OIDC_AUDIENCE;
  if (!audience) return null;
  const allowedEmails = parseAllowedEmails(deps.config.env.TALLY_OIDC_SERVICE_ACCOUNT);
  if (allowedEmails.length === 0)
    throw new Error(
      "TALLY_OIDC_AUDIENCE is set but TALLY_OIDC_SERVICE_ACCOUNT is not: name the scheduler's and the dead-letter subscription's service accounts (comma-separated)",
    );
  return createOidcVerifier({ audience, allowedEmails, certificates: opts.oidcCertificates });
}

function methodNotAllowed(res: Response, req: Request, allowed: string): TallyError {
  res.setHeader("Allow", allowed);
  return new TallyError(405, "method_not_allowed", `${req.path} accepts ${allowed} only (got ${req.method})`);
}

async function handleReconcile(deps: HandlerDeps, req: Request, res: Response, log: HandlerDeps["log"]) {
  const parsed = parseReconcileRequest(req.body);
  if (!parsed.ok) throw invalidArgument("the reconcile request body is not valid", parsed.problems);
  const summary = await reconcileTick({ ...deps, log }, parsed.options);
  // Some action failed (and was logged): 500 makes Cloud Scheduler retry, and every action is
  // conditional, so the retry only does what is still left.
  if (summary.errors > 0)
    throw new TallyError(
      500,
      "reconcile_incomplete",
      `${summary.errors} reconcile action(s) failed: ${summary.errorSamples[0]?.message ?? "see the logs"}`,
      summary.errorSamples.map((e) => ({
        path: [e.sweep, e.batchId, e.itemId].filter(Boolean).join("/"),
        problem: e.message,
      })),
    );
  sendJson(res, 200, summary);
}

async function handleDeadLetter(deps: HandlerDeps, req: Request, res: Response, log: HandlerDeps["log"]) {
  const decoded = decodePushRequest(req.body, req.headers);
  if (decoded.kind === "not_a_delivery")
    throw invalidArgument("the request is not a Pub/Sub push delivery", decoded.problems);
  const delivery = withUnwrappedDeadLetterAttributes(decoded.delivery, req);
  const outcome = await receiveDeadLetter(deps, delivery, log.child({ messageId: delivery.messageId }));
  // Every outcome acknowledges (2xx): poison and skips cannot be fixed by a redelivery.
  sendJson(res, 200, { messageId: delivery.messageId, ...outcome });
}

/** In the unwrapped push form, attributes are headers (lower-cased by HTTP). */
function withUnwrappedDeadLetterAttributes(delivery: PushDelivery, req: Request): PushDelivery {
  if (delivery.form !== "unwrapped") return delivery;
  const attributes = { ...delivery.attributes };
  for (const name of Object.values(deadLetterAttributes)) {
    const v = req.get(name.toLowerCase());
    if (v !== undefined) attributes[name] = v;
  }
  return { ...delivery, attributes };
}
