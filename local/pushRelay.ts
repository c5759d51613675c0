// Optional push concurrency for the emulator. The Pub/Sub emulator pushes each subscription from
// exactly two threads, one message at a time (its PushLoop; measured here: 200 pushes to a 300 ms
// endpoint took 31 s with never more than 2 in flight), while Cloud Pub/Sub scales push concurrency
// with the endpoint's ack rate. With `--push-concurrency N` the local stack creates the work
// subscription without a push endpoint (the emulator refuses to pull from a push subscription;
// every other setting is unchanged) and this relay streaming-pulls it and POSTs the same push
// envelope the emulator sends to the same endpoint (the front door), N at a time. The subscription's
// settings still decide the rest: a 2xx acks; anything else, a connection error or the ack deadline
// passing nacks, and the emulator redelivers with the subscription's retry policy and dead-letters
// after its maxDeliveryAttempts. Unlike the emulator's push, the relay passes on `deliveryAttempt`,
// as Cloud Pub/Sub does for subscriptions with a dead-letter policy.
import { Duration, type Message, type PubSub, type Subscription } from "@google-cloud/pubsub";

export interface PushRelayStats {
  pushed: number;
  acked: number;
  nacked: number;
  inFlight: number;
}

export interface PushRelay {
  stats(): PushRelayStats;
  stop(): Promise<void>;
}

/** Pushes slower than this are reported through `onError` (they hold a concurrency slot). */
const slowMs = 10_000;

export function startPushRelay(opts: {
  pubsub: PubSub;
  projectId: string;
  subscription: string;
  endpoint: string;
  concurrency: number;
  ackDeadlineSeconds: number;
  onError?: (message: string) => void;
}): PushRelay {
  const stats: PushRelayStats = { pushed: 0, acked: 0, nacked: 0, inFlight: 0 };
  const subscriptionPath = `projects/${opts.projectId}/subscriptions/${opts.subscription}`;
  const stopping = new AbortController();
  const sub: Subscription = opts.pubsub.subscription(opts.subscription, {
    flowControl: { maxMessages: opts.concurrency, allowExcessMessages: false },
    // Push semantics: the ack deadline is the request timeout, never extended past it.
    maxExtensionTime: Duration.from({ seconds: opts.ackDeadlineSeconds }),
  });

  const push = async (m: Message) => {
    stats.pushed++;
    stats.inFlight++;
    // The envelope the emulator (and Cloud Pub/Sub) push: wrapped message plus subscription name.
    const publishTime = m.publishTime.toISOString();
    const body = {
      message: {
        data: m.data.toString("base64"),
        attributes: m.attributes,
        messageId: m.id,
        message_id: m.id,
        publishTime,
        publish_time: publishTime,
        ...(m.orderingKey ? { orderingKey: m.orderingKey } : {}),
      },
      subscription: subscriptionPath,
      // Cloud Pub/Sub sends it when the subscription has a dead-letter policy.
      ...(m.deliveryAttempt ? { deliveryAttempt: m.deliveryAttempt } : {}),
    };
    let ok = false;
    const sentAt = Date.now();
    try {
      const res = await fetch(opts.endpoint, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.any([stopping.signal, AbortSignal.timeout(opts.ackDeadlineSeconds * 1000)]),
      });
      await res.arrayBuffer().catch(() => undefined);
      ok = res.status >= 200 && res.status < 300;
      const took = Date.now() - sentAt;
      if (took > slowMs)
        opts.onError?.(
          `push of message ${m.id} (${JSON.stringify(m.attributes)}) took ${took} ms, answered ${res.status}`,
        );
    } catch (err) {
      if (!stopping.signal.aborted)
        opts.onError?.(`push of message ${m.id} failed: ${(err as Error).message}`);
    } finally {
      stats.inFlight--;
    }
    if (ok) {
      stats.acked++;
      m.ack();
    } else {
      stats.nacked++;
      m.nack();
    }
  };

  sub.on("message", (m: Message) => void push(m));
  sub.on("error", (err: Error) => opts.onError?.(`push relay subscriber error: ${err.message}`));

  return {
    stats: () => ({ ...stats }),
    async stop() {
      stopping.abort();
      sub.removeAllListeners("message");
      await sub.close().catch(() => undefined);
    },
  };
}
