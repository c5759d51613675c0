// Provisions the Pub/Sub topology on the emulator from the same `Topology` object the Pulumi program
// declares its resources from (functions/topology.ts), so the local stack runs with the deployed
// delivery settings: each pipeline's work topic and its push subscription to that pipeline's workers
// (its ack deadline, retry policy, dead-letter policy, never-expiring), the shared dead-letter topic
// and its push subscription — a dead-letter topic without a subscription would lose messages. Push
// endpoints are the local handlers; the emulator sends no OIDC token, so none is configured here.
import type { PubSub, SubscriptionMetadata } from "@google-cloud/pubsub";
import type { Topology } from "../functions/topology";

export interface PushEndpoints {
  /** Pipeline name → the front door in front of that pipeline's worker processes. */
  workers: Record<string, string>;
  /** The reconciler's dead-letter receiver (`…/dead-letter`). */
  deadLetter: string;
}

export interface SubscriptionSpec {
  name: string;
  topic: string;
  metadata: SubscriptionMetadata;
}

export interface ProvisionOptions {
  /**
   * Deliver the work subscriptions through push relays (pushRelay.ts): the emulator refuses to pull
   * from a push subscription, so they are created without a push endpoint, every other setting
   * unchanged, and a relay per pipeline pushes to `endpoints.workers[pipeline]`.
   */
  relayWork?: boolean;
}

/** The push subscriptions, as the Pulumi stack declares them, with local push endpoints. */
export function subscriptionSpecs(
  topology: Topology,
  projectId: string,
  endpoints: PushEndpoints,
  opts: ProvisionOptions = {},
): SubscriptionSpec[] {
  const d = topology.delivery;
  // ttl unset inside a present expirationPolicy means "never expire" (Pulumi: `ttl: ""`); leaving
  // the policy out would give the 31-day default.
  const neverExpire = { ttl: null };
  const retryPolicy = (s: { minimumBackoffSeconds: number; maximumBackoffSeconds: number }) => ({
    minimumBackoff: { seconds: s.minimumBackoffSeconds },
    maximumBackoff: { seconds: s.maximumBackoffSeconds },
  });
  return [
    ...topology.pipelines.map((x): SubscriptionSpec => {
      const endpoint = endpoints.workers[x.pipeline];
      if (!endpoint) throw new Error(`no local push endpoint for pipeline ${x.pipeline}`);
      return {
        name: x.workSubscription,
        topic: x.workTopic,
        metadata: {
          pushConfig: opts.relayWork ? {} : { pushEndpoint: endpoint },
          ackDeadlineSeconds: x.delivery.ackDeadlineSeconds,
          retryPolicy: retryPolicy(x.delivery),
          deadLetterPolicy: {
            deadLetterTopic: `projects/${projectId}/topics/${topology.deadLetterTopic}`,
            maxDeliveryAttempts: x.delivery.maxDeliveryAttempts,
          },
          expirationPolicy: neverExpire,
        },
      };
    }),
    {
      name: topology.deadLetterSubscription,
      topic: topology.deadLetterTopic,
      metadata: {
        pushConfig: { pushEndpoint: endpoints.deadLetter },
        ackDeadlineSeconds: d.ackDeadlineSeconds,
        retryPolicy: retryPolicy(d),
        expirationPolicy: neverExpire,
      },
    },
  ];
}

/** Creates every pipeline's work topic and the dead-letter topic (idempotent), before the handlers start. */
export async function provisionTopics(pubsub: PubSub, topology: Topology): Promise<void> {
  for (const name of [...topology.pipelines.map((x) => x.workTopic), topology.deadLetterTopic]) {
    const topic = pubsub.topic(name);
    const [exists] = await topic.exists();
    if (!exists) await alreadyExistsIsFine(topic.create());
  }
}

/**
 * Creates (or updates, when they exist) the push subscriptions. Done once the handlers answer:
 * the emulator starts pushing as soon as a push subscription exists.
 */
export async function provisionSubscriptions(
  pubsub: PubSub,
  topology: Topology,
  projectId: string,
  endpoints: PushEndpoints,
  opts: ProvisionOptions = {},
): Promise<void> {
  await provisionTopics(pubsub, topology);
  for (const spec of subscriptionSpecs(topology, projectId, endpoints, opts)) {
    const sub = pubsub.subscription(spec.name);
    const [exists] = await sub.exists();
    if (exists) {
      // The emulator refuses to update expirationPolicy; it was set when the subscription was created.
      const { expirationPolicy: _fixed, ...updatable } = spec.metadata;
      await sub.setMetadata(updatable);
    } else await alreadyExistsIsFine(pubsub.topic(spec.topic).createSubscription(spec.name, spec.metadata));
  }
}

async function alreadyExistsIsFine(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    // gRPC ALREADY_EXISTS: someone else created it between our check and our create.
    if ((err as { code?: number }).code !== 6) throw err;
  }
}
