// Poison messages: undecodable doorbells, unknown batches, unknown items, published straight into
// the work topic and the dead-letter topic. No redelivery can fix them, so each must be acknowledged
// (2xx) on its first delivery, recorded (an ERROR `message.poison` log line naming the message id,
// which the log-based metric counts), and change nothing: no batch appears, a finished batch stays
// exactly as it was.
import { waitFor } from "../../../local/waitFor";
import { ApiCallError } from "../support/chaosApi";
import type { ChaosProxy } from "../support/chaosProxy";
import {
  assertInvariant,
  check,
  checkNone,
  demoItems,
  finalDeadlineMs,
  type Scenario,
  waitFinal,
} from "./scenario";

interface Poison {
  name: string;
  topic: "work" | "deadLetter";
  data: string;
  attributes: Record<string, string>;
}

export const poisonMessages: Scenario = {
  id: "poison-messages",
  title: "poison messages on the work and dead-letter topics: acknowledged, recorded, nothing changes",
  stack: "shared",
  async run(env, _scale, say) {
    // A finished batch the poison names, to prove it stays untouched.
    const batchId = env.batchId("poison-ref");
    const items = demoItems("p-", 5, (i) => ({ value: i }));
    await env.api.submit({ id: batchId, pipeline: "demo", items });
    await waitFinal(env, batchId, finalDeadlineMs(5));
    const snapshot = async () =>
      JSON.stringify({
        batch: await env.api.getBatch(batchId),
        items: await env.api.allItems(batchId, { include: "result" }),
      });
    const before = await snapshot();

    const unknownBatch = env.batchId("poison-no-such-batch");
    const poison: Poison[] = [
      { name: "work: not a doorbell", topic: "work", data: "{not json", attributes: {} },
      {
        name: "work: unknown batch",
        topic: "work",
        data: "",
        attributes: { batchId: unknownBatch, itemId: "x", generation: "1" },
      },
      {
        name: "work: unknown item",
        topic: "work",
        data: "",
        attributes: { batchId, itemId: "no-such-item", generation: "1" },
      },
      {
        name: "work: malformed attributes",
        topic: "work",
        data: "",
        attributes: { batchId, itemId: "a/b", generation: "one" },
      },
      { name: "dead-letter: not a doorbell", topic: "deadLetter", data: "\u0000\u0001", attributes: {} },
      {
        name: "dead-letter: unknown item",
        topic: "deadLetter",
        data: "",
        attributes: { batchId, itemId: "no-such-item", generation: "1" },
      },
      {
        name: "dead-letter: unknown batch",
        topic: "deadLetter",
        data: "",
        attributes: { batchId: unknownBatch, itemId: "x", generation: "1" },
      },
    ];
    // Poison on demo's work topic: the proxy watches that pipeline's deliveries.
    const { workTopic } = env.stack.pipeline("demo").topology;
    const { deadLetterTopic } = env.stack.config.topology;
    const publishedAt = Date.now();
    const published = await Promise.all(
      poison.map(async (p) => ({
        ...p,
        messageId: await env.pubsub
          .topic(p.topic === "work" ? workTopic : deadLetterTopic)
          .publishMessage({ data: Buffer.from(p.data), attributes: p.attributes }),
      })),
    );
    const proxyOf = (p: Poison): ChaosProxy => (p.topic === "work" ? env.workProxy : env.deadLetterProxy);

    // Acknowledged and recorded, each one.
    const ackedAt = await waitFor(
      `all ${published.length} poison messages to be acknowledged and logged`,
      () => {
        const done = published.map((p) => {
          const acked = proxyOf(p)
            .deliveriesOf(p.messageId)
            .find((d) => d.status !== null && d.status < 300);
          const logged = env.logs.events({ messageId: p.messageId, event: "message.poison" }).length > 0;
          return acked && logged ? (acked.answeredAt ?? acked.at) : null;
        });
        return done.every((t) => t !== null) ? Math.max(...(done as number[])) : null;
      },
      60_000,
      50,
    );
    const problems: string[] = [];
    for (const p of published) {
      const deliveries = proxyOf(p).deliveriesOf(p.messageId);
      const first = deliveries[0];
      if (!first || first.status === null || first.status >= 300)
        problems.push(`${p.name} (${p.messageId}): first delivery answered ${first?.status}; expected 2xx`);
      const events = env.logs.events({ messageId: p.messageId, event: "message.poison" });
      const wrongSource = events.filter(
        (e) => !e.source.startsWith(p.topic === "work" ? "worker" : "reconciler"),
      );
      if (wrongSource.length > 0 || events.some((e) => e.severity !== "ERROR"))
        problems.push(
          `${p.name}: logged as ${events.map((e) => `${e.severity} by ${e.source}`).join(", ")}; expected ERROR by the ${p.topic === "work" ? "worker" : "reconciler"}`,
        );
    }
    checkNone(problems, "poison message(s) not acknowledged and recorded as required");

    // Nothing else changed.
    const unknown = await env.api.getBatch(unknownBatch).then(
      () => "exists",
      (err: unknown) => (err instanceof ApiCallError ? err.status : String(err)),
    );
    check(
      unknown === 404,
      `GET ${unknownBatch} answered ${unknown}; poison must not create a batch (expected 404)`,
    );
    const after = await snapshot();
    check(
      after === before,
      () => `batch ${batchId} changed after the poison messages:\n  before ${before}\n  after  ${after}`,
    );
    await assertInvariant(
      env,
      batchId,
      items.map((i) => i.id),
    );
    const redelivered = published.filter((p) => proxyOf(p).deliveriesOf(p.messageId).length > 1);
    checkNone(
      redelivered.map((p) => `${p.name}: delivered ${proxyOf(p).deliveriesOf(p.messageId).length} times`),
      "poison message(s) delivered again after their acknowledgement",
    );
    say(`${published.length} poison messages acknowledged and recorded within ${ackedAt - publishedAt} ms`);
    return {
      items: items.length,
      outcome: "succeeded (unchanged)",
      recoveryMs: ackedAt - publishedAt,
      recovery: "poison published → acknowledged and recorded (all)",
      figures: { poison: published.length },
    };
  },
};
