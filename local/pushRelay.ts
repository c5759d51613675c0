// Optional push concurrency for the emulator. The Pub/Sub emulator pushes each subscription from
// exactly two threads, one message at a time (its PushLoop; measured here: 200 pushes to a 300 ms
// endpoint took 31 s with never more than 2 in flight), while Cloud Pub/Sub scales push concurrency
// with the endpoint's ack rate. With `--push-concurrency N` the local stack creates the work
// subscription without a push endpoint (the emulator refuses to pull from a push subscription;
// every other setting is unchanged) and this relay pulls it and POSTs the same push envelope the
// emulator sends to the same endpoint (the front door), N at a time. The subscription's settings
// still decide the rest: a 2xx acks; anything else, a connection error or the ack deadline passing
// nacks, and the emulator redelivers with the subscription's retry policy and dead-letters after its
// maxDeliveryAttempts. Unlike the emulator's push, the relay passes on `deliveryAttempt`, as Cloud
// Pub/Sub does for subscriptions with a dead-letter policy.
//
// Why unary pulls over the emulator's REST API rather than the client library's streaming pull:
// push has no client-side lease management — a message is out for exactly one ack deadline, then
// acknowledged, refused or redelivered. The streaming subscriber's lease manager, flow-control
// queue and stream reconnects add states in which a pulled message is neither pushed nor nacked for
// a while; under the chaos suite's worker kills, doorbells were seen to stay away for many minutes
// (items pending at attempt 0 until the stale-pending sweep). Here every pulled message is pushed
// at once and ends in an ack or a nack (or its deadline passes): nothing else holds it.

import { setMaxListeners } from "node:events";

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
/** An empty pull waits this long before the next one (the emulator answers empty pulls at once). */
const idlePollMs = 25;

interface ReceivedMessage {
  ackId: string;
  deliveryAttempt?: number;
  message: {
    data?: string;
    attributes?: Record<string, string>;
    messageId: string;
    publishTime: string;
    orderingKey?: string;
  };
}

export function startPushRelay(opts: {
  /** The emulator's host:port (PUBSUB_EMULATOR_HOST). */
  emulatorHost: string;
  projectId: string;
  subscription: string;
  endpoint: string;
  concurrency: number;
  ackDeadlineSeconds: number;
  onError?: (message: string) => void;
}): PushRelay {
  const stats: PushRelayStats = { pushed: 0, acked: 0, nacked: 0, inFlight: 0 };
  const subscriptionPath = `projects/${opts.projectId}/subscriptions/${opts.subscription}`;
  const api = `http://${opts.emulatorHost}/v1/${subscriptionPath}`;
  const stopping = new AbortController();
  // Every pull, push and ack in flight listens on it (AbortSignal.any): up to the relay's
  // concurrency at once, legitimately more than Node's default warning threshold of 10.
  setMaxListeners(0, stopping.signal);
  const pushes = new Set<Promise<void>>();
  let slotFreed: (() => void) | null = null;

  const call = async (verb: string, body: unknown): Promise<unknown> => {
    const res = await fetch(`${api}:${verb}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.any([stopping.signal, AbortSignal.timeout(30_000)]),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${verb} answered ${res.status}: ${text.slice(0, 200)}`);
    return text ? JSON.parse(text) : {};
  };

  const settle = async (m: ReceivedMessage, ok: boolean) => {
    // A lost ack or nack is harmless: the deadline passes and the emulator redelivers.
    await (ok
      ? call("acknowledge", { ackIds: [m.ackId] })
      : call("modifyAckDeadline", { ackIds: [m.ackId], ackDeadlineSeconds: 0 })
    ).catch((err: Error) => {
      if (!stopping.signal.aborted)
        opts.onError?.(`${ok ? "ack" : "nack"} of ${m.message.messageId}: ${err.message}`);
    });
  };

  const push = async (m: ReceivedMessage) => {
    stats.pushed++;
    // The envelope the emulator (and Cloud Pub/Sub) push: wrapped message plus subscription name.
    const { message } = m;
    const body = {
      message: {
        data: message.data ?? "",
        attributes: message.attributes ?? {},
        messageId: message.messageId,
        message_id: message.messageId,
        publishTime: message.publishTime,
        publish_time: message.publishTime,
        ...(message.orderingKey ? { orderingKey: message.orderingKey } : {}),
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
        // Push semantics: the ack deadline is the request timeout.
        signal: AbortSignal.any([stopping.signal, AbortSignal.timeout(opts.ackDeadlineSeconds * 1000)]),
      });
      await res.arrayBuffer().catch(() => undefined);
      ok = res.status >= 200 && res.status < 300;
      const took = Date.now() - sentAt;
      if (took > slowMs)
        opts.onError?.(
          `push of message ${message.messageId} (${JSON.stringify(message.attributes)}) took ${took} ms, answered ${res.status}`,
        );
    } catch (err) {
      if (!stopping.signal.aborted)
        opts.onError?.(`push of message ${message.messageId} failed: ${(err as Error).message}`);
    }
    await settle(m, ok);
    // Counted once Pub/Sub was told (the slot is free from here on).
    stats.inFlight--;
    if (ok) stats.acked++;
    else stats.nacked++;
  };

  const start = (m: ReceivedMessage) => {
    stats.inFlight++;
    const p = push(m).finally(() => {
      pushes.delete(p);
      slotFreed?.();
    });
    pushes.add(p);
  };

  const loop = async () => {
    while (!stopping.signal.aborted) {
      const free = opts.concurrency - stats.inFlight;
      if (free <= 0) {
        await new Promise<void>((r) => {
          slotFreed = r;
        });
        slotFreed = null;
        continue;
      }
      let received: ReceivedMessage[] = [];
      try {
        const res = (await call("pull", { maxMessages: free, returnImmediately: true })) as {
          receivedMessages?: ReceivedMessage[];
        };
        received = res.receivedMessages ?? [];
      } catch (err) {
        if (stopping.signal.aborted) break;
        opts.onError?.(`pull failed: ${(err as Error).message}`);
      }
      for (const m of received) start(m);
      if (received.length === 0) await idle(idlePollMs, stopping.signal);
    }
  };
  const looping = loop();

  return {
    stats: () => ({ ...stats }),
    async stop() {
      stopping.abort();
      slotFreed?.();
      await looping;
      await Promise.allSettled([...pushes]);
    },
  };
}

function idle(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    // The listener goes when the timer fires: an idle relay sleeps thousands of times, and a
    // listener left behind by each would pile up on the one long-lived signal.
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
