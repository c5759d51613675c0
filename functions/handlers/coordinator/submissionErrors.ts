// Errors of a submission that already stored part of its batch (an NDJSON stream refused after its
// first chunks): the answer says which batch keeps those items and how to finish it.
import { TallyError } from "../../core/errors";

export interface StoredBatchInfo {
  id: string;
  status: string;
  /** Items stored by this and earlier attempts. */
  received: number;
  /** Doorbells published (the submission cursor). */
  cursor: number;
}

export class PartiallyStoredSubmission extends TallyError {
  constructor(
    cause: TallyError,
    readonly batch: StoredBatchInfo,
  ) {
    super(cause.status, cause.code, cause.message, cause.details);
    this.name = "PartiallyStoredSubmission";
  }
}

/** The request stream ended before its end (client disconnected): there is no one to answer. */
export class ClientGone extends Error {
  constructor(readonly batchId: string | null) {
    super("the client closed the request before the end of its body");
    this.name = "ClientGone";
  }
}
