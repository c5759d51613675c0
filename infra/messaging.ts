// Pub/Sub: the work topic and its push subscription to the worker, the dead-letter topic and its push
// subscription to the reconciler, and a parking topic for dead letters the reconciler itself could
// not take. Names, ack deadline, retry and dead-letter settings come from the shared topology.
//
// Messages are doorbells (ids only; the Firestore ledger is the record), so the last-resort parking
// subscription is for inspection: the reconciler's scans find and settle the items regardless.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { Topology } from "../functions/topology";
import type { Apis } from "./apis";
import type { Identities } from "./identities";

/** Subscriptions keep undelivered messages for the maximum Pub/Sub allows. */
export const messageRetention = "604800s";

export interface MessagingInputs {
  topology: Topology;
  project: pulumi.Input<string>;
  labels: Record<string, string>;
  apis: Apis;
  identities: Identities;
  /** Base URLs of the push targets, also the OIDC audiences the handlers verify. */
  workerUrl: pulumi.Input<string>;
  reconcilerUrl: pulumi.Input<string>;
  /** The handlers and their invoker grants: pushing before they exist only burns delivery attempts. */
  pushTargets: pulumi.Resource[];
}

export interface Messaging {
  workTopic: gcp.pubsub.Topic;
  deadLetterTopic: gcp.pubsub.Topic;
  parkedTopic: gcp.pubsub.Topic;
  workSubscription: gcp.pubsub.Subscription;
  deadLetterSubscription: gcp.pubsub.Subscription;
  parkedSubscription: gcp.pubsub.Subscription;
}

export function parkedTopicName(topology: Topology): string {
  return `${topology.deadLetterTopic}-parked`;
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

  const workTopic = new gcp.pubsub.Topic(
    `${p}-topic-work`,
    { project: m.project, name: t.workTopic, labels: m.labels },
    opts,
  );
  const deadLetterTopic = new gcp.pubsub.Topic(
    `${p}-topic-dead-letter`,
    { project: m.project, name: t.deadLetterTopic, labels: m.labels },
    opts,
  );
  const parkedTopic = new gcp.pubsub.Topic(
    `${p}-topic-parked`,
    { project: m.project, name: parkedTopicName(t), labels: m.labels },
    opts,
  );

  // The Pub/Sub service agent publishes dead letters: without this grant dead-lettering silently never happens.
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

  const retryPolicy = {
    minimumBackoff: `${d.minimumBackoffSeconds}s`,
    maximumBackoff: `${d.maximumBackoffSeconds}s`,
  };

  const workSubscription = new gcp.pubsub.Subscription(
    `${p}-sub-work`,
    {
      project: m.project,
      name: t.workSubscription,
      topic: workTopic.name,
      labels: m.labels,
      // For push the ack deadline is also the request timeout; the worker's timeout fits inside it.
      ackDeadlineSeconds: d.ackDeadlineSeconds,
      messageRetentionDuration: messageRetention,
      expirationPolicy: { ttl: "" },
      retryPolicy,
      deadLetterPolicy: {
        deadLetterTopic: topicPath(t.deadLetterTopic),
        maxDeliveryAttempts: d.maxDeliveryAttempts,
      },
      pushConfig: {
        pushEndpoint: pulumi.interpolate`${m.workerUrl}/`,
        oidcToken: { serviceAccountEmail: m.identities.workPush.email, audience: m.workerUrl },
      },
    },
    {
      parent,
      dependsOn: [
        ...m.apis.on("pubsub.googleapis.com"),
        agentPublishesDeadLetters,
        workPushTokens,
        ...m.pushTargets,
      ],
    },
  );

  const deadLetterSubscription = new gcp.pubsub.Subscription(
    `${p}-sub-dead-letter`,
    {
      project: m.project,
      name: t.deadLetterSubscription,
      topic: deadLetterTopic.name,
      labels: m.labels,
      // Same deadline as the work subscription; the reconciler's timeout is capped to fit inside it.
      ackDeadlineSeconds: d.ackDeadlineSeconds,
      messageRetentionDuration: messageRetention,
      expirationPolicy: { ttl: "" },
      retryPolicy,
      deadLetterPolicy: {
        deadLetterTopic: topicPath(parkedTopicName(t)),
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
        ...m.pushTargets,
      ],
    },
  );

  // Nothing consumes this pull subscription automatically: it keeps parked dead letters for a week so
  // an operator can look at them (the dead-lettered alert fires when anything lands here).
  const parkedSubscription = new gcp.pubsub.Subscription(
    `${p}-sub-parked`,
    {
      project: m.project,
      name: `${parkedTopicName(t)}-hold`,
      topic: parkedTopic.name,
      labels: m.labels,
      ackDeadlineSeconds: 60,
      messageRetentionDuration: messageRetention,
      expirationPolicy: { ttl: "" },
    },
    opts,
  );

  // The Pub/Sub service agent must be able to acknowledge on the source subscription to move a message
  // to the dead-letter topic.
  new gcp.pubsub.SubscriptionIAMMember(
    `${p}-work-sub-agent-subscriber`,
    {
      project: m.project,
      subscription: workSubscription.name,
      role: "roles/pubsub.subscriber",
      member: agent,
    },
    { parent },
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

  // Handlers publish doorbells: the coordinator on submission, the worker when a finished batch
  // releases its dependents, the reconciler when it redrives or resumes work.
  for (const role of ["coordinator", "worker", "reconciler"] as const)
    new gcp.pubsub.TopicIAMMember(
      `${p}-work-topic-${role}-publisher`,
      {
        project: m.project,
        topic: workTopic.name,
        role: "roles/pubsub.publisher",
        member: m.identities[role].member,
      },
      { parent },
    );

  return {
    workTopic,
    deadLetterTopic,
    parkedTopic,
    workSubscription,
    deadLetterSubscription,
    parkedSubscription,
  };
}
