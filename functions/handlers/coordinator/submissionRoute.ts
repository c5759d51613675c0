// `POST /v1/batches`: picks the body format from Content-Type and answers with the batch.
import { TallyError } from "../../core/errors";
import type { HttpRequest } from "../../http/httpTypes";
import { mediaType } from "../../http/requestBody";
import { submitJson } from "./jsonSubmission";
import { submitNdjson } from "./ndjsonSubmission";
import type { SubmissionResult } from "./submissionResult";
import type { SubmissionEnv } from "./submissionWriter";

/** Media types taken as NDJSON (one JSON value per line). */
export const ndjsonMediaTypes = ["application/x-ndjson", "application/jsonl", "application/jsonlines"];

export async function submitBatch(env: SubmissionEnv, req: HttpRequest): Promise<SubmissionResult> {
  const type = mediaType(req);
  if (ndjsonMediaTypes.includes(type)) return submitNdjson(env, req);
  if (type === "application/json" || type === "") return submitJson(env, req);
  throw new TallyError(
    415,
    "unsupported_media_type",
    `Content-Type "${type}" is not accepted: send application/json or application/x-ndjson`,
    [{ path: "Content-Type", problem: `"${type}" is not application/json or application/x-ndjson` }],
  );
}
