// Checks of one submitted item, in the order a client fixes them: shape ({id?, payload}, nothing
// else), id, payload size (413), whether Firestore can store the payload, and the pipeline's own
// payload schema (so a bad payload is refused at submission, not discovered by a worker).
import type { NewItem } from "../../core/model";
import type { PipelineDefinition } from "../../pipelines/definePipeline";
import type { ProblemList } from "./problems";
import { itemShapeSchema, joinPath, zodProblems } from "./validation";

export interface ItemCheckSettings {
  pipeline: PipelineDefinition<unknown>;
  maxPayloadBytes: number;
}

/** Where an item came from, for problem paths: `items[3]` (JSON body) or `line 5` (NDJSON). */
export interface ItemOrigin {
  position: number;
  /** `items[3]` or `line 5` */
  label: string;
  /** Bytes of the item's own text when known (NDJSON line): skips re-serializing small payloads. */
  sourceBytes?: number;
}

export function pathIn(origin: ItemOrigin, sub: readonly PropertyKey[]): string {
  if (sub.length === 0) return origin.label;
  return origin.label.startsWith("line ")
    ? `${origin.label}: ${joinPath("", sub)}`
    : joinPath(origin.label, sub);
}

/** The item to store, or null with its problems added to `problems`. */
export function checkItem(
  raw: unknown,
  origin: ItemOrigin,
  settings: ItemCheckSettings,
  problems: ProblemList,
): NewItem | null {
  const before = problems.total;
  const shape = itemShapeSchema.safeParse(raw);
  if (!shape.success) {
    for (const p of zodProblems(shape.error, (path) => pathIn(origin, path)))
      problems.add("invalid", p.path, p.problem);
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return null;
  }
  const obj = raw as { id?: unknown; payload?: unknown };
  if (!("payload" in obj) || obj.payload === undefined) {
    problems.add("invalid", pathIn(origin, ["payload"]), "is required");
    return null;
  }
  const payload = obj.payload;
  // A line no longer than the cap holds a payload no longer than the cap (re-serializing never grows it).
  const size =
    origin.sourceBytes !== undefined && origin.sourceBytes <= settings.maxPayloadBytes
      ? 0
      : Buffer.byteLength(JSON.stringify(payload));
  if (size > settings.maxPayloadBytes) {
    problems.add(
      "too_large",
      pathIn(origin, ["payload"]),
      `${size} bytes exceeds the limit of ${settings.maxPayloadBytes}`,
    );
    return null;
  }
  for (const p of storableProblems(payload))
    problems.add("invalid", pathIn(origin, ["payload", ...p.path]), p.problem);
  const schema = settings.pipeline.payload;
  if (schema) {
    const parsed = schema.safeParse(payload);
    if (!parsed.success)
      for (const p of zodProblems(parsed.error, (path) => pathIn(origin, ["payload", ...path])))
        problems.add("invalid", p.path, p.problem);
  }
  if (problems.total > before) return null;
  return { itemId: typeof obj.id === "string" ? obj.id : String(origin.position), payload };
}

/**
 * Firestore cannot store every JSON value (measured on the emulator): an array directly inside an
 * array, an empty map key, a key of the form `__x__`, or nesting deeper than 20 levels (the item
 * document adds its own levels, so payloads get 16). Refused here with the path, rather than failing
 * the whole chunk's write later.
 */
export const maxPayloadDepth = 16;

export function storableProblems(value: unknown): Array<{ path: PropertyKey[]; problem: string }> {
  const out: Array<{ path: PropertyKey[]; problem: string }> = [];
  const walk = (v: unknown, path: PropertyKey[], depth: number, inArray: boolean) => {
    if (out.length >= 10 || v === null || typeof v !== "object") return;
    if (depth > maxPayloadDepth) {
      out.push({ path, problem: `nested deeper than ${maxPayloadDepth} levels` });
      return;
    }
    if (Array.isArray(v)) {
      if (inArray) {
        out.push({
          path,
          problem: "an array directly inside an array cannot be stored (wrap it in an object)",
        });
        return;
      }
      v.forEach((x, i) => {
        walk(x, [...path, i], depth + 1, true);
      });
      return;
    }
    for (const [k, x] of Object.entries(v)) {
      if (k.length === 0) out.push({ path, problem: "an empty key cannot be stored" });
      else if (/^__.*__$/.test(k))
        out.push({ path: [...path, k], problem: "keys of the form __name__ are reserved" });
      else walk(x, [...path, k], depth + 1, false);
    }
  };
  walk(value, [], 0, false);
  return out;
}
