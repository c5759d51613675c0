// Decodes a Pub/Sub push request into a delivery (DESIGN.md §2.5). Two forms arrive:
// - wrapped (the default): JSON `{message: {attributes, data, messageId, publishTime,
//   deliveryAttempt?}, subscription}`;
// - unwrapped (`pushConfig.noWrapper.writeMetadata: true`): the message data is the body, the
//   metadata comes in `x-goog-pubsub-message-id` / `-publish-time` / `-subscription-name` headers
//   and each attribute is a header of its own name (HTTP lower-cases it).
// A request that is neither is not a Pub/Sub delivery at all (400). A delivery whose attributes are
// missing or malformed is poison: the caller acknowledges it, because no redelivery can fix it.
import type { ItemRef } from "../core/ports";

export interface PushDelivery {
  messageId: string;
  publishTime: string | null;
  subscription: string | null;
  /** Only real Pub/Sub with a dead-letter policy sends it; the emulator does not. */
  deliveryAttempt: number | null;
  attributes: Record<string, string>;
  form: "wrapped" | "unwrapped";
}

export type DecodedRequest =
  | { kind: "delivery"; delivery: PushDelivery }
  | { kind: "not_a_delivery"; problems: { path: string; problem: string }[] };

type Headers = Record<string, string | string[] | undefined>;
const header = (headers: Headers, name: string): string | undefined => {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
};

/** The attribute names a doorbell carries; in the unwrapped form they are headers. */
export const doorbellAttributes = ["batchId", "itemId", "generation"] as const;

export function decodePushRequest(body: unknown, headers: Headers): DecodedRequest {
  const unwrappedId = header(headers, "x-goog-pubsub-message-id");
  const isObject = (v: unknown): v is Record<string, unknown> =>
    !!v && typeof v === "object" && !Array.isArray(v);
  // The metadata headers decide: an unwrapped body is the raw message data, whatever it looks like.
  if (unwrappedId) {
    const attributes: Record<string, string> = {};
    for (const name of doorbellAttributes) {
      const v = header(headers, name.toLowerCase());
      if (v !== undefined) attributes[name] = v;
    }
    return {
      kind: "delivery",
      delivery: {
        messageId: unwrappedId,
        publishTime: header(headers, "x-goog-pubsub-publish-time") ?? null,
        subscription: header(headers, "x-goog-pubsub-subscription-name") ?? null,
        deliveryAttempt: null,
        attributes,
        form: "unwrapped",
      },
    };
  }
  if (isObject(body) && isObject(body.message)) {
    const m = body.message;
    const messageId = m.messageId ?? m.message_id;
    if (typeof messageId !== "string" || messageId === "")
      return { kind: "not_a_delivery", problems: [{ path: "message.messageId", problem: "missing" }] };
    const attributes: Record<string, string> = {};
    if (isObject(m.attributes))
      for (const [k, v] of Object.entries(m.attributes)) if (typeof v === "string") attributes[k] = v;
    const publishTime = m.publishTime ?? m.publish_time;
    return {
      kind: "delivery",
      delivery: {
        messageId,
        publishTime: typeof publishTime === "string" ? publishTime : null,
        subscription: typeof body.subscription === "string" ? body.subscription : null,
        deliveryAttempt: typeof body.deliveryAttempt === "number" ? body.deliveryAttempt : null,
        attributes,
        form: "wrapped",
      },
    };
  }
  return {
    kind: "not_a_delivery",
    problems: [
      {
        path: "body",
        problem:
          "expected a Pub/Sub push envelope {message: {messageId, attributes, data}, subscription} or an unwrapped push with x-goog-pubsub-message-id",
      },
    ],
  };
}

export type ItemRefFromAttributes = { ok: true; ref: ItemRef } | { ok: false; problems: string[] };

// Firestore document ids: no "/", not "." or "..", not __reserved__, at most 1,500 bytes. Checked
// here so a malformed doorbell is poison rather than a ledger error that would be retried.
function isDocumentId(id: string): boolean {
  return (
    !id.includes("/") && id !== "." && id !== ".." && !/^__.*__$/.test(id) && Buffer.byteLength(id) <= 1500
  );
}

/** The doorbell's item reference, or every problem with its attributes. */
export function itemRefFromAttributes(attributes: Record<string, string>): ItemRefFromAttributes {
  const problems: string[] = [];
  const { batchId, itemId, generation } = attributes;
  for (const [name, id] of [
    ["batchId", batchId],
    ["itemId", itemId],
  ] as const) {
    if (!id) problems.push(`attribute ${name} is missing`);
    else if (!isDocumentId(id))
      problems.push(`attribute ${name} is not a valid id (${JSON.stringify(id.slice(0, 100))})`);
  }
  const gen = generation === undefined ? Number.NaN : Number(generation);
  if (generation === undefined) problems.push("attribute generation is missing");
  else if (!/^\d{1,9}$/.test(generation) || !Number.isSafeInteger(gen))
    problems.push(`attribute generation must be a non-negative integer (got ${JSON.stringify(generation)})`);
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, ref: { batchId: batchId!, itemId: itemId!, generation: gen } };
}
