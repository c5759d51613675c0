// Pub/Sub: one work topic per pipeline with its push subscription to that pipeline's worker
// (issue #17 §1), the shared dead-letter topic and its push subscription to the reconciler, and a
// parking topic for dead letters the reconciler itself could not take. Names, ack deadlines, retry
// and dead-letter settings come from the shared topology (each pipeline's own delivery settings).
//
// Messages are doorbells (ids only; the Firestore ledger is the record), so the last-resort parking
// subscription is for inspection: the reconciler's scans find and settle the items regardless.
//
// Why a topic per pipeline rather than subscription filters on one topic: the Pub/Sub emulator
// accepts filters and ignores them (measured: a filtered subscription received every message), so
// the local stack could not run what is deployed.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { PipelineTopology, Topology } from "../functions/topology";
import type { Apis } from "./apis";
import type { Identities, WorkerAccounts } from "./identities";

/** Subscriptions keep undelivered messages for the maximum Pub/Sub allows. */
export const messageRetention = "604800s";

export interface PipelineEndpoint {
  topology: PipelineTopology;
  /** Base URL of the pipeline's worker, also the OIDC audience it verifies. */
  workerUrl: pulumi.Input<string>;
  /** The worker and its invoker grant: pushing before they exist only burns delivery attempts. */
  ready: pulumi.Resource[];
}

export interface MessagingInputs {
  topology: Topology;
  project: pulumi.Input<string>;
  labels: Record<string, string>;
  apis: Apis;
  identities: Identities;
  workerAccounts: WorkerAccounts;
  pipelines: PipelineEndpoint[];
  reconcilerUrl: pulumi.Input<string>;
  /** The reconciler and its invoker grants. */
  reconcilerReady: pulumi.Resource[];
}

export interface PipelineMessaging {
  pipeline: string;
  topic: gcp.pubsub.Topic;
  subscription: gcp.pubsub.Subscription;
}

export interface Messaging {
  pipelines: PipelineMessaging[];
  deadLetterTopic: gcp.pubsub.Topic;
  parkedTopic: gcp.pubsub.Topic;
  deadLetterSubscription: gcp.pubsub.Subscription;
  parkedSubscription: gcp.pubsub.Subscription;
}

export function createMessaging(m: MessagingInputs, parent?: pulumi.Resource): Messaging {
  const t = m.topology;
  const d = t.delivery;
  const p = t.prefix;
  const opts = { parent, dependsOn: m.apis.on("pubsub.googleapis.com") };
  const agent = m.apis.pubsubAgent.member;
  // A dead-letter topic is named by its full path; built from the project id (known at preview) so
  // policies can match it against the topic before anything exists.
  const topicPath = (name: string) => pulumi.interpolate`projects/${m.project}/topics/${name}`;

  const deadLetterTopic = new gcp.pubsub.Topic(
    `${p}-topic-dead-letter`,
    { project: m.project, name: t.deadLetterTopic, labels: m.labels },
    opts,
  );
  const parkedTopic = new gcp.pubsub.Topic(
    `${p}-topic-parked`,
    { project: m.project, name: t.parkedTopic, labels: m.labels },
    opts,
  );

  // The Pub/Sub service agent publishes dead letters of every pipeline's subscription: without this
  // grant dead-lettering silently never happens.
  const agentPublishesDeadLetters = new gcp.pubsub.TopicIAMMember(
    `${p}-dead-letter-topic-agent-publisher`,
    { project: m.project, topic: deadLetterTopic.name, role: "roles/pubsub.publisher", member: agent },
    { parent },
  );
  // Same for the reconciler's own dead letters, which go to the parking topic.
  const agentPublishesParked = new gcp.pubsub.TopicIAMMember(
    `${p}-parked-topic-agent-publisher`,
    { project: m.project, topic: parkedTopic.name, role: "roles/pubsub.publisher", member: agent },
    { parent },
  );

  // Pub/Sub signs each push's OIDC token as the subscription's service account. On projects whose
  // Pub/Sub service agent was created on or before 8 April 2021 the agent needs
  // roles/iam.serviceAccountTokenCreator to do so (Google's push-authentication and Eventarc docs);
  // newer projects have it through roles/pubsub.serviceAgent. Granted on each push account only,
  // never on the project.
  const agentMintsTokens = (name: string, account: gcp.serviceaccount.Account) =>
    new gcp.serviceaccount.IAMMember(
      `${p}-${name}-agent-token-creator`,
      { serviceAccountId: account.name, role: "roles/iam.serviceAccountTokenCreator", member: agent },
      { parent },
    );
  const workPushTokens = agentMintsTokens("work-push", m.identities.workPush);
  const deadLetterPushTokens = agentMintsTokens("dead-letter-push", m.identities.deadLetterPush);

  const retryPolicy = (s: { minimumBackoffSeconds: number; maximumBackoffSeconds: number }) => ({
    minimumBackoff: `${s.minimumBackoffSeconds}s`,
    maximumBackoff: `${s.maximumBackoffSeconds}s`,
  });

  const pipelines = m.pipelines.map(({ topology: x, workerUrl, ready }): PipelineMessaging => {
    const own = x.delivery;
    const topic = new gcp.pubsub.Topic(
      `${p}-topic-work-${x.pipeline}`,
      { project: m.project, name: x.workTopic, labels: { ...m.labels, "tally-pipeline": x.pipeline } },
      opts,
    );
    const subscription = new gcp.pubsub.Subscription(
      `${p}-sub-work-${x.pipeline}`,
      {
        project: m.project,
        name: x.workSubscription,
        topic: topic.name,
        labels: { ...m.labels, "tally-pipeline": x.pipeline },
        // For push the ack deadline is also the request timeout; this pipeline's worker timeout fits inside it.
        ackDeadlineSeconds: own.ackDeadlineSeconds,
        messageRetentionDuration: messageRetention,
        expirationPolicy: { ttl: "" },
        retryPolicy: retryPolicy(own),
        deadLetterPolicy: {
          deadLetterTopic: topicPath(t.deadLetterTopic),
          maxDeliveryAttempts: own.maxDeliveryAttempts,
        },
        pushConfig: {
          pushEndpoint: pulumi.interpolate`${workerUrl}/`,
          oidcToken: { serviceAccountEmail: m.identities.workPush.email, audience: workerUrl },
        },
      },
      {
        parent,
        dependsOn: [
          ...m.apis.on("pubsub.googleapis.com"),
          agentPublishesDeadLetters,
          workPushTokens,
          ...ready,
        ],
      },
    );
    // The Pub/Sub service agent must be able to acknowledge on this subscription to move a message
    // to the dead-letter topic.
    new gcp.pubsub.SubscriptionIAMMember(
      `${p}-work-sub-${x.pipeline}-agent-subscriber`,
      { project: m.project, subscription: subscription.name, role: "roles/pubsub.subscriber", member: agent },
      { parent },
    );
    // The coordinator publishes this pipeline's doorbells on submission, retry and resume.
    new gcp.pubsub.TopicIAMMember(
      `${p}-work-topic-${x.pipeline}-coordinator-publisher`,
      {
        project: m.project,
        topic: topic.name,
        role: "roles/pubsub.publisher",
        member: m.identities.coordinator.member,
      },
      { parent },
    );
    // The reconciler republishes this pipeline's doorbells (redrive, stale pending, cursors).
    new gcp.pubsub.TopicIAMMember(
      `${p}-work-topic-${x.pipeline}-reconciler-publisher`,
      {
        project: m.project,
        topic: topic.name,
        role: "roles/pubsub.publisher",
        member: m.identities.reconciler.member,
      },
      { parent },
    );
    const worker = m.workerAccounts[x.pipeline];
    if (!worker) throw new Error(`no service account for pipeline ${x.pipeline}`);
    // This pipeline's worker publishes a fresh doorbell for an item it released after its ack
    // deadline, on its own pipeline's topic only.
    new gcp.pubsub.TopicIAMMember(
      `${p}-work-topic-${x.pipeline}-worker-publisher`,
      { project: m.project, topic: topic.name, role: "roles/pubsub.publisher", member: worker.member },
      { parent },
    );
    return { pipeline: x.pipeline, topic, subscription };
  });
  const deadLetterSubscription = new gcp.pubsub.Subscription(
    `${p}-sub-dead-letter`,
    {
      project: m.project,
      name: t.deadLetterSubscription,
      topic: deadLetterTopic.name,
      labels: m.labels,
      // The stack-wide deadline; the reconciler's timeout is capped to fit inside it.
      ackDeadlineSeconds: d.ackDeadlineSeconds,
      messageRetentionDuration: messageRetention,
      expirationPolicy: { ttl: "" },
      retryPolicy: retryPolicy(d),
      deadLetterPolicy: {
        deadLetterTopic: topicPath(t.parkedTopic),
        maxDeliveryAttempts: d.maxDeliveryAttempts,
      },
      pushConfig: {
        pushEndpoint: pulumi.interpolate`${m.reconcilerUrl}${t.deadLetterPath}`,
        oidcToken: { serviceAccountEmail: m.identities.deadLetterPush.email, audience: m.reconcilerUrl },
      },
    },
    {
      parent,
      dependsOn: [
        ...m.apis.on("pubsub.googleapis.com"),
        agentPublishesParked,
        deadLetterPushTokens,
        ...m.reconcilerReady,
      ],
    },
  );

  // Nothing consumes this pull subscription automatically: it keeps parked dead letters for a week so
  // an operator can look at them (the dead-lettered alert fires when anything lands here).
  const parkedSubscription = new gcp.pubsub.Subscription(
    `${p}-sub-parked`,
    {
      project: m.project,
      name: t.parkedSubscription,
      topic: parkedTopic.name,
      labels: m.labels,
      ackDeadlineSeconds: 60,
      messageRetentionDuration: messageRetention,
      expirationPolicy: { ttl: "" },
    },
    opts,
  );

  // Same for the dead-letter subscription, whose exhausted messages move to the parking topic.
  new gcp.pubsub.SubscriptionIAMMember(
    `${p}-dead-letter-sub-agent-subscriber`,
    {
      project: m.project,
      subscription: deadLetterSubscription.name,
      role: "roles/pubsub.subscriber",
      member: agent,
    },
    { parent },
  );

  return { pipelines, deadLetterTopic, parkedTopic, deadLetterSubscription, parkedSubscription };
}
