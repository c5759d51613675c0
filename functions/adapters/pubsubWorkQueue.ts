// Doorbells on the work topics (DESIGN.md §2.5): attributes {batchId, itemId, generation}, no data.
// Messages are never the only record of work — the ledger is — so losing or duplicating one never
// changes an outcome. Each pipeline has its own work topic (issue #17 §1); `topicOf` names it
// (functions/topology.ts in the handlers; a test may route every pipeline to one topic it observes).
import type { PubSub, Topic } from "@google-cloud/pubsub";
import type { ItemRef, WorkQueue } from "../core/ports";
import { pipelineTopology, type Topology } from "../topology";

/** The topic a pipeline's doorbells go to; throws for a pipeline that has none. */
export type TopicOf = (pipeline: string) => string;

/** Routing by the topology: each pipeline's own work topic. */
export function topologyTopics(topology: Topology): TopicOf {
  return (pipeline) => pipelineTopology(topology, pipeline).workTopic;
}

export class PubSubWorkQueue implements WorkQueue {
  private readonly topics = new Map<string, Topic>();
  published = 0;

  constructor(
    private readonly pubsub: PubSub,
    private readonly topicOf: TopicOf,
  ) {}

  private topic(pipeline: string): Topic {
    const name = this.topicOf(pipeline);
    let topic = this.topics.get(name);
    if (!topic) {
      // Batching: up to 1,000 messages (the API's limit per publish request) or 10 ms, whichever
      // comes first. Doorbells are ~100 bytes, so the 10 MB request cap never binds. No flow
      // control on the publisher: callers publish one bounded chunk at a time and await it, which
      // already bounds what is outstanding (F4).
      topic = this.pubsub.topic(name, {
        batching: { maxMessages: 1000, maxMilliseconds: 10, maxBytes: 9 * 1024 * 1024 },
      });
      this.topics.set(name, topic);
    }
    return topic;
  }

  async publish(pipeline: string, refs: ItemRef[]): Promise<void> {
    const topic = this.topic(pipeline);
    await Promise.all(
      refs.map((r) =>
        topic.publishMessage({
          data: Buffer.alloc(0),
          attributes: { batchId: r.batchId, itemId: r.itemId, generation: String(r.generation) },
        }),
      ),
    );
    this.published += refs.length;
  }
}
