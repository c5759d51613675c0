// The dead-letter receiver (POST /dead-letter; DESIGN.md §2.2, §2.5, F10). Pub/Sub dead-letters a
// doorbell after maxDeliveryAttempts deliveries that never reached the ledger (the worker crashed,
// timed out, or its responses were lost). The item is recorded as `failed(dead_lettered)` with the
// source subscription and delivery count — unless it is already terminal or a worker holds a live
// lease on it (then that worker, or the lease-expiry sweep, decides) — and the batch is settled, so
// a dead-lettered item never leaves its batch running. Every outcome acknowledges: a redelivery
// cannot change it. Only a ledger failure answers 5xx, so Pub/Sub pushes the message again.

import { settleBatch } from "../../core/finalizeBatch";
import type { Logger } from "../../core/logger";
import type { ItemError } from "../../core/model";
import type { ItemRef } from "../../core/ports";
import { itemRefFromAttributes, type PushDelivery } from "../../pubsub/pushDelivery";
import type { HandlerDeps } from "../../runtime";
import { finalizeDepsFor } from "./reconcileContext";

/** Attributes Pub/Sub adds to a message it forwards to a dead-letter topic. */
export const deadLetterAttributes = {
  sourceSubscription: "CloudPubSubDeadLetterSourceSubscription",
  sourceSubscriptionProject: "CloudPubSubDeadLetterSourceSubscriptionProject",
  deliveryCount: "CloudPubSubDeadLetterSourceDeliveryCount",
  sourcePublishTime: "CloudPubSubDeadLetterSourceTopicPublishTime",
} as const;

export type DeadLetterOutcome =
  | { kind: "failed"; ref: ItemRef; error: ItemError; finalized: boolean }
  /** Already terminal, under a live lease, or of an older generation: nothing to record. */
  | { kind: "skipped"; ref: ItemRef; reason: string; finalized: boolean }
  /** Undecodable, or names an item the ledger does not know: acknowledged and logged at ERROR. */
  | { kind: "poison"; problems: string[] };

export async function receiveDeadLetter(
  deps: HandlerDeps,
  delivery: PushDelivery,
  log: Logger,
): Promise<DeadLetterOutcome> {
  const { ledger, clock } = deps;
  const decoded = itemRefFromAttributes(delivery.attributes);
  if (!decoded.ok) return poison(log, delivery, decoded.problems);
  const ref = decoded.ref;
  const attrs = delivery.attributes;
  const sourceSubscription = attrs[deadLetterAttributes.sourceSubscription] ?? "unknown";
  const deliveryCount = Number(attrs[deadLetterAttributes.deliveryCount] ?? Number.NaN);
  const details: Record<string, string | number> = { sourceSubscription, messageId: delivery.messageId };
  if (Number.isFinite(deliveryCount)) details.deliveryCount = deliveryCount;
  if (attrs[deadLetterAttributes.sourceSubscriptionProject])
    details.sourceSubscriptionProject = attrs[deadLetterAttributes.sourceSubscriptionProject]!;
  const error: ItemError = {
    kind: "dead_lettered",
    message:
      `Pub/Sub gave up on the delivery after ${Number.isFinite(deliveryCount) ? deliveryCount : "its maximum"} ` +
      `attempt(s) on ${sourceSubscription} without the worker recording an outcome (crash, timeout or lost responses)`,
    details,
  };
  const fields = {
    batchId: ref.batchId,
    itemId: ref.itemId,
    generation: ref.generation,
    messageId: delivery.messageId,
  };

  const result = await ledger.failItem(ref, error, clock.now());
  if (result.kind === "skip" && result.reason === "not_found")
    return poison(log, delivery, [`item ${ref.batchId}/${ref.itemId} does not exist in the ledger`]);
  if (result.kind === "done")
    log.warn("item.dead_lettered", `item ${ref.batchId}/${ref.itemId} failed: dead-lettered`, {
      ...fields,
      kind: "dead_lettered",
      sourceSubscription,
      deliveryCount: details.deliveryCount ?? null,
    });
  else
    log.info(
      "item.idempotent_skip",
      `dead-lettered ${ref.batchId}/${ref.itemId} left as it is: ${result.reason}`,
      {
        ...fields,
        reason: result.reason,
        status: result.item?.status ?? null,
      },
    );
  // "Anything left?" as in the worker: this may have been the batch's last live item.
  const finalized = (await settleBatch(finalizeDepsFor(deps, log), ref.batchId)) !== null;
  return result.kind === "done"
    ? { kind: "failed", ref, error, finalized }
    : { kind: "skipped", ref, reason: result.reason, finalized };
}

function poison(log: Logger, delivery: PushDelivery, problems: string[]): DeadLetterOutcome {
  log.error("message.poison", `poison dead-letter message ${delivery.messageId}: ${problems.join("; ")}`, {
    messageId: delivery.messageId,
    subscription: delivery.subscription,
    attributes: delivery.attributes,
    problems,
    endpoint: "dead-letter",
  });
  return { kind: "poison", problems };
}
