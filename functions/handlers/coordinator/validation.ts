// Request schemas of the coordinator API (zod), and the translation of zod issues into the API's
// problem list: one entry per problem, each with the field path (`items[3].payload.sleepMs`) and
// what is wrong, never just the first.
import { z } from "zod";
import { batchStatuses, itemStatuses } from "../../core/model";

/**
 * Batch and item ids become Firestore document ids (and Pub/Sub attribute values), so they are
 * restricted to a set that is always valid there: no '/', no leading '.' or '_' (Firestore
 * reserves `__…__`, `.` and `..`), at most 128 characters.
 */
export const idPattern = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const idRule = "must be 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit";
export const idSchema = z.string({ error: "must be a string" }).regex(idPattern, { error: idRule });

/** "is required" when the field is missing, "must be …" when it has the wrong type. */
const typeError = (expected: string) => (issue: { input?: unknown }) =>
  issue.input === undefined ? `is required (${expected})` : `must be ${expected}`;

/** Dependencies are looked up in one read each at submission; a wide fan-in beyond this is a design smell. */
export const maxDependencies = 100;

const headerShape = {
  id: idSchema.optional(),
  pipeline: z.string({ error: typeError("a pipeline name") }).min(1, { error: "must not be empty" }),
  failureThreshold: z
    .number({ error: "must be a number between 0 and 1" })
    .min(0, { error: "must be between 0 and 1" })
    .max(1, { error: "must be between 0 and 1" })
    .optional(),
  dependsOn: z
    .array(idSchema, { error: "must be an array of batch ids" })
    .max(maxDependencies, { error: `at most ${maxDependencies} dependencies` })
    .optional(),
};

/** `POST /v1/batches` with a JSON body. Items are checked one by one afterwards (itemChecks.ts). */
export const jsonSubmissionSchema = z.strictObject({
  ...headerShape,
  items: z.array(z.unknown(), { error: typeError("an array of {id?, payload}") }),
});

/** The first line of an NDJSON submission: the same header, without items. */
export const ndjsonHeaderSchema = z.strictObject(headerShape);

export type SubmissionHeader = z.infer<typeof ndjsonHeaderSchema>;

/** One item: `{id?, payload}` (payload presence is checked separately: zod treats unknown as optional). */
export const itemShapeSchema = z.strictObject({ id: idSchema.optional(), payload: z.unknown() });

const limitSchema = z
  .string()
  .regex(/^\d+$/, { error: "must be an integer between 1 and 1000" })
  .transform(Number)
  .pipe(
    z
      .number()
      .int()
      .min(1, { error: "must be between 1 and 1000" })
      .max(1000, { error: "must be between 1 and 1000" }),
  );

export const defaultPageSize = 50;

export const listBatchesQuerySchema = z.strictObject({
  status: z.enum(batchStatuses, { error: `must be one of ${batchStatuses.join(", ")}` }).optional(),
  limit: limitSchema.optional(),
  pageToken: z.string().min(1, { error: "must not be empty" }).optional(),
});

export const itemIncludes = ["payload", "result", "steps"] as const;
export type ItemInclude = (typeof itemIncludes)[number];

export const listItemsQuerySchema = z.strictObject({
  status: z.enum(itemStatuses, { error: `must be one of ${itemStatuses.join(", ")}` }).optional(),
  limit: limitSchema.optional(),
  pageToken: z.string().min(1, { error: "must not be empty" }).optional(),
  /** Comma-separated: which large fields to return (payload, result, step outputs). */
  include: z
    .string()
    .transform((s) =>
      s
        .split(",")
        .map((x) => x.trim())
        .filter((x) => x.length > 0),
    )
    .pipe(z.array(z.enum(itemIncludes, { error: `must list only ${itemIncludes.join(", ")}` })))
    .optional(),
});

/** Query parameters as a plain object; a repeated parameter is a problem of its own. */
export function queryObject(params: URLSearchParams): { values: Record<string, string>; repeated: string[] } {
  const values: Record<string, string> = {};
  const repeated: string[] = [];
  for (const [k, v] of params) {
    if (k in values && !repeated.includes(k)) repeated.push(k);
    values[k] = v;
  }
  return { values, repeated };
}

/** `items[3].payload.text` from a zod path under a prefix. */
export function joinPath(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out.length === 0 ? String(seg) : `.${String(seg)}`;
  }
  return out.length === 0 ? "body" : out;
}

export interface PathProblem {
  path: string;
  problem: string;
}

/** Every zod issue as a path + problem; unknown keys get one entry each. */
export function zodProblems(
  error: z.ZodError,
  formatPath: (path: PropertyKey[]) => string = (path) => joinPath("", path),
): PathProblem[] {
  const out: PathProblem[] = [];
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys)
        out.push({ path: formatPath([...issue.path, key]), problem: "unknown field" });
    } else {
      out.push({ path: formatPath([...issue.path]), problem: issue.message });
    }
  }
  return out;
}
