// Doorbells on the work topic (DESIGN.md §2.5): attributes {batchId, itemId, generation}, no data.
// Messages are never the only record of work — the ledger is — so losing or duplicating one never
// changes an outcome.
import type { PubSub, Topic } from "@google-cloud/pubsub";
import type { ItemRef, WorkQueue } from "../core/ports";

export class PubSubWorkQueue implements WorkQueue {
  private readonly topic: Topic;
  published = 0;

  constructor(pubsub: PubSub, topicName: string) {
    // Batching: up to 1,000 messages (the API's limit per publish request) or 10 ms, whichever
    // comes first. Doorbells are ~100 bytes, so the 10 MB request cap never binds. No flow
    // control on the publisher: callers publish one bounded chunk at a time and await it, which
    // already bounds what is outstanding (F4).
    this.topic = pubsub.topic(topicName, {
      batching: { maxMessages: 1000, maxMilliseconds: 10, maxBytes: 9 * 1024 * 1024 },
    });
  }

  async publish(refs: ItemRef[]): Promise<void> {
    await Promise.all(
      refs.map((r) =>
        this.topic.publishMessage({
          data: Buffer.alloc(0),
          attributes: { batchId: r.batchId, itemId: r.itemId, generation: String(r.generation) },
        }),
      ),
    );
    this.published += refs.length;
  }
}
