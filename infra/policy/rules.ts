// The stack's policies as plain functions over simple resource records, so the same rules run in
// real previews (infra/policy/index.ts wraps them in a @pulumi/policy pack, run with
// `pulumi preview --policy-pack infra/policy`) and offline in the test suite over the resources the
// Pulumi mocks record. No Pulumi imports here.
//
// Records carry the resource's type token, logical name, URN, properties and dependencies (URNs:
// explicit dependsOn plus the resources its inputs come from — the order the engine follows). In a
// real preview the policy SDK throws on properties not yet known; it then reports the policy as
// advisory ("can't run during preview") and the policy runs for real on `pulumi up`.
import {
  alertPolicyFilters,
  checkTimeSeriesFilter,
  dashboardFilters,
  type EmittedFilter,
  userMetricPrefix,
  userMetricsNamed,
} from "./monitoringFilter";

export interface ResourceRecord {
  type: string;
  name: string;
  urn?: string;
  // biome-ignore lint/suspicious/noExplicitAny: resource properties are arbitrary provider JSON.
  props: Record<string, any>;
  /** URNs of the resources this one depends on (direct). */
  dependencies?: string[];
}

export interface Violation {
  rule: string;
  resource: string;
  urn?: string;
  message: string;
}

export interface Rule {
  name: string;
  description: string;
  check(resources: ResourceRecord[]): Violation[];
}

export const types = {
  subscription: "gcp:pubsub/subscription:Subscription",
  topicIamMember: "gcp:pubsub/topicIAMMember:TopicIAMMember",
  subscriptionIamMember: "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
  schedulerJob: "gcp:cloudscheduler/job:Job",
  function: "gcp:cloudfunctionsv2/function:Function",
  alertPolicy: "gcp:monitoring/alertPolicy:AlertPolicy",
  notificationChannel: "gcp:monitoring/notificationChannel:NotificationChannel",
  projectIamMember: "gcp:projects/iAMMember:IAMMember",
  projectIamBinding: "gcp:projects/iAMBinding:IAMBinding",
  projectIamPolicy: "gcp:projects/iAMPolicy:IAMPolicy",
  projectCustomRole: "gcp:projects/iAMCustomRole:IAMCustomRole",
  serviceAccountIamMember: "gcp:serviceaccount/iAMMember:IAMMember",
  serviceAccountIamBinding: "gcp:serviceaccount/iAMBinding:IAMBinding",
  logMetric: "gcp:logging/metric:Metric",
  dashboard: "gcp:monitoring/dashboard:Dashboard",
  metricReadiness: "pulumi-nodejs:dynamic/tally:MetricReadiness",
  propagationWait: "pulumi-nodejs:dynamic/tally:PropagationWait",
  secretIamMember: "gcp:secretmanager/secretIamMember:SecretIamMember",
  secretIamBinding: "gcp:secretmanager/secretIamBinding:SecretIamBinding",
  secretIamPolicy: "gcp:secretmanager/secretIamPolicy:SecretIamPolicy",
} as const;

/** The Pub/Sub service agent, the identity that moves messages to dead-letter topics. */
const pubsubAgentPattern = /^serviceAccount:service-\d+@gcp-sa-pubsub\.iam\.gserviceaccount\.com$/;
const publicPrincipals = ["allUsers", "allAuthenticatedUsers"];
const tokenCreatorRoles = ["roles/iam.serviceAccountTokenCreator"];

const ofType = (resources: ResourceRecord[], type: string) => resources.filter((r) => r.type === type);
/** `projects/p/topics/t` and `t` name the same topic. */
const lastSegment = (s: unknown) => (typeof s === "string" ? (s.split("/").pop() ?? s) : undefined);
const violation = (rule: string, r: ResourceRecord, message: string): Violation => ({
  rule,
  resource: r.name,
  urn: r.urn,
  message,
});

interface IamCondition {
  title?: string;
  expression?: string;
}

function projectGrants(
  resources: ResourceRecord[],
): { resource: ResourceRecord; role: string; members: string[]; condition?: IamCondition }[] {
  const out: { resource: ResourceRecord; role: string; members: string[]; condition?: IamCondition }[] = [];
  for (const r of resources) {
    if (r.type === types.projectIamMember)
      out.push({ resource: r, role: r.props.role, members: [r.props.member], condition: r.props.condition });
    else if (r.type === types.projectIamBinding)
      out.push({
        resource: r,
        role: r.props.role,
        members: r.props.members ?? [],
        condition: r.props.condition,
      });
    else if (r.type === types.projectIamPolicy) {
      const policy = JSON.parse(r.props.policyData ?? "{}") as {
        bindings?: { role: string; members: string[]; condition?: IamCondition }[];
      };
      for (const b of policy.bindings ?? [])
        out.push({ resource: r, role: b.role, members: b.members ?? [], condition: b.condition });
    }
  }
  return out;
}

/** URN → record, and whether `from` depends on `to` directly or through other dependencies. */
function dependencyGraph(resources: ResourceRecord[]) {
  const byUrn = new Map(resources.filter((r) => r.urn).map((r) => [r.urn!, r]));
  const dependsOn = (from: ResourceRecord, to: ResourceRecord): boolean => {
    const seen = new Set<string>();
    const stack = [...(from.dependencies ?? [])];
    while (stack.length > 0) {
      const urn = stack.pop()!;
      if (urn === to.urn) return true;
      if (seen.has(urn)) continue;
      seen.add(urn);
      stack.push(...(byUrn.get(urn)?.dependencies ?? []));
    }
    return false;
  };
  return { byUrn, dependsOn };
}

/** `serviceAccount:EMAIL` for a service-account reference (`projects/P/serviceAccounts/EMAIL` or EMAIL). */
function serviceAccountMember(ref: unknown): string | undefined {
  const email = lastSegment(ref);
  return email ? `serviceAccount:${email}` : undefined;
}

/** Subscriptions whose topic receives another subscription's dead letters. */
function deadLetterTopics(resources: ResourceRecord[]): Set<string> {
  const topics = new Set<string>();
  for (const s of ofType(resources, types.subscription)) {
    const t = lastSegment(s.props.deadLetterPolicy?.deadLetterTopic);
    if (t) topics.add(t);
  }
  return topics;
}

export const subscriptionsNeverExpire: Rule = {
  name: "subscriptions-never-expire",
  description:
    'Every subscription sets expirationPolicy.ttl to "" (otherwise it is deleted after 31 idle days).',
  check: (resources) =>
    ofType(resources, types.subscription)
      .filter((s) => s.props.expirationPolicy?.ttl !== "")
      .map((s) =>
        violation(
          "subscriptions-never-expire",
          s,
          `subscription ${s.props.name ?? s.name} must set expirationPolicy.ttl to "" (got ${JSON.stringify(s.props.expirationPolicy?.ttl)}): an idle subscription otherwise expires after 31 days and its messages are lost`,
        ),
      ),
};

export const subscriptionsDeadLetter: Rule = {
  name: "subscriptions-dead-letter",
  description:
    "Every subscription has a dead-letter policy (5..100 attempts); only a pull subscription holding an exhausted dead-letter topic's messages for inspection is exempt.",
  check: (resources) => {
    const dlTopics = deadLetterTopics(resources);
    const out: Violation[] = [];
    for (const s of ofType(resources, types.subscription)) {
      const policy = s.props.deadLetterPolicy;
      const isPush = Boolean(s.props.pushConfig);
      if (!policy?.deadLetterTopic) {
        if (!isPush && dlTopics.has(lastSegment(s.props.topic) ?? "")) continue;
        out.push(
          violation(
            "subscriptions-dead-letter",
            s,
            `subscription ${s.props.name ?? s.name} has no dead-letter policy: a message that can never be processed is retried until it expires instead of being recorded`,
          ),
        );
        continue;
      }
      const attempts = policy.maxDeliveryAttempts;
      if (!Number.isInteger(attempts) || attempts < 5 || attempts > 100)
        out.push(
          violation(
            "subscriptions-dead-letter",
            s,
            `subscription ${s.props.name ?? s.name} must set deadLetterPolicy.maxDeliveryAttempts in 5..100 (got ${attempts})`,
          ),
        );
    }
    return out;
  },
};

export const deadLetterGrants: Rule = {
  name: "dead-letter-grants",
  description:
    "The Pub/Sub service agent has roles/pubsub.publisher on every dead-letter topic and roles/pubsub.subscriber on every subscription that dead-letters (without them dead-lettering silently never happens).",
  check: (resources) => {
    const topicGrants = ofType(resources, types.topicIamMember);
    const subGrants = ofType(resources, types.subscriptionIamMember);
    const out: Violation[] = [];
    for (const s of ofType(resources, types.subscription)) {
      const dlt = lastSegment(s.props.deadLetterPolicy?.deadLetterTopic);
      if (!dlt) continue;
      const subName = lastSegment(s.props.name);
      const publishes = topicGrants.some(
        (g) =>
          lastSegment(g.props.topic) === dlt &&
          g.props.role === "roles/pubsub.publisher" &&
          pubsubAgentPattern.test(g.props.member ?? ""),
      );
      if (!publishes)
        out.push(
          violation(
            "dead-letter-grants",
            s,
            `the Pub/Sub service agent needs roles/pubsub.publisher on dead-letter topic ${dlt} (used by subscription ${subName})`,
          ),
        );
      const subscribes = subGrants.some(
        (g) =>
          lastSegment(g.props.subscription) === subName &&
          g.props.role === "roles/pubsub.subscriber" &&
          pubsubAgentPattern.test(g.props.member ?? ""),
      );
      if (!subscribes)
        out.push(
          violation(
            "dead-letter-grants",
            s,
            `the Pub/Sub service agent needs roles/pubsub.subscriber on subscription ${subName} to forward its dead letters`,
          ),
        );
    }
    return out;
  },
};

export const deadLetterTopicsSubscribed: Rule = {
  name: "dead-letter-topics-subscribed",
  description:
    "Every dead-letter topic has a subscription (messages published to a topic without one are lost).",
  check: (resources) => {
    const subscribed = new Set(ofType(resources, types.subscription).map((s) => lastSegment(s.props.topic)));
    const out: Violation[] = [];
    for (const s of ofType(resources, types.subscription)) {
      const dlt = lastSegment(s.props.deadLetterPolicy?.deadLetterTopic);
      if (dlt && !subscribed.has(dlt))
        out.push(
          violation(
            "dead-letter-topics-subscribed",
            s,
            `dead-letter topic ${dlt} of subscription ${s.props.name ?? s.name} has no subscription: dead letters published there are lost`,
          ),
        );
    }
    return out;
  },
};

/** Walks IAM-bearing properties (member, members, policyData) wherever they appear. */
function principalsIn(value: unknown, key = ""): string[] {
  if (typeof value === "string") {
    if (key === "member") return [value];
    if (key === "policyData") {
      try {
        const policy = JSON.parse(value) as { bindings?: { members?: string[] }[] };
        return (policy.bindings ?? []).flatMap((b) => b.members ?? []);
      } catch {
        return [];
      }
    }
    return [];
  }
  if (Array.isArray(value))
    return key === "members"
      ? value.filter((v): v is string => typeof v === "string")
      : value.flatMap((v) => principalsIn(v));
  if (value && typeof value === "object")
    return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => principalsIn(v, k));
  return [];
}

export const noPublicPrincipals: Rule = {
  name: "no-public-principals",
  description: "No IAM grant anywhere names allUsers or allAuthenticatedUsers.",
  check: (resources) =>
    resources.flatMap((r) =>
      principalsIn(r.props)
        .filter((m) => publicPrincipals.includes(m))
        .map((m) =>
          violation(
            "no-public-principals",
            r,
            `${r.type} ${r.name} grants to ${m}: nothing in Tally is public`,
          ),
        ),
    ),
};

export const pushAndSchedulerUseOidc: Rule = {
  name: "push-and-scheduler-use-oidc",
  description:
    "Every push subscription and every HTTP scheduler job sends an OIDC token with a service account and an audience.",
  check: (resources) => {
    const out: Violation[] = [];
    for (const s of ofType(resources, types.subscription)) {
      const push = s.props.pushConfig;
      if (!push) continue;
      const oidc = push.oidcToken;
      if (!oidc?.serviceAccountEmail || !oidc?.audience)
        out.push(
          violation(
            "push-and-scheduler-use-oidc",
            s,
            `push subscription ${s.props.name ?? s.name} must set pushConfig.oidcToken with serviceAccountEmail and audience: Cloud Run rejects unauthenticated pushes and the handler verifies the token`,
          ),
        );
    }
    for (const j of ofType(resources, types.schedulerJob)) {
      const target = j.props.httpTarget;
      if (!target) continue;
      const oidc = target.oidcToken;
      if (!oidc?.serviceAccountEmail || !oidc?.audience)
        out.push(
          violation(
            "push-and-scheduler-use-oidc",
            j,
            `scheduler job ${j.props.name ?? j.name} must set httpTarget.oidcToken with serviceAccountEmail and audience`,
          ),
        );
    }
    return out;
  },
};

/** Seconds from "300s" / "300.5s". */
function durationSeconds(d: unknown): number | undefined {
  if (typeof d !== "string") return undefined;
  const m = /^(\d+(?:\.\d+)?)s$/.exec(d);
  return m ? Number(m[1]) : undefined;
}

/** The function an https URL points at: run.app hosts start with `<service>-`. */
function targetFunction(url: unknown, functions: ResourceRecord[]): ResourceRecord | undefined {
  if (typeof url !== "string") return undefined;
  let label: string;
  try {
    label = new URL(url).hostname.split(".")[0] ?? "";
  } catch {
    return undefined;
  }
  return functions
    .filter((f) => typeof f.props.name === "string" && label.startsWith(`${f.props.name}-`))
    .sort((a, b) => b.props.name.length - a.props.name.length)[0];
}

// Defaults the APIs apply when a value is not set.
const defaultAckDeadlineSeconds = 10;
const defaultFunctionTimeoutSeconds = 60;
const defaultAttemptDeadlineSeconds = 180;

export const deadlinesCoverTimeouts: Rule = {
  name: "deadlines-cover-timeouts",
  description:
    "A push subscription's ack deadline (and a scheduler job's attempt deadline) is at least the target handler's timeout, so a delivery still running is never redelivered in parallel.",
  check: (resources) => {
    const functions = ofType(resources, types.function);
    const timeoutOf = (f: ResourceRecord) =>
      f.props.serviceConfig?.timeoutSeconds ?? defaultFunctionTimeoutSeconds;
    const out: Violation[] = [];
    for (const s of ofType(resources, types.subscription)) {
      const fn = targetFunction(s.props.pushConfig?.pushEndpoint, functions);
      if (!fn) continue;
      const ack = s.props.ackDeadlineSeconds ?? defaultAckDeadlineSeconds;
      if (ack < timeoutOf(fn))
        out.push(
          violation(
            "deadlines-cover-timeouts",
            s,
            `subscription ${s.props.name ?? s.name} has ackDeadlineSeconds ${ack}, shorter than the timeout of ${fn.props.name} (${timeoutOf(fn)} s): Pub/Sub would redeliver while the first delivery still runs`,
          ),
        );
    }
    for (const j of ofType(resources, types.schedulerJob)) {
      const fn = targetFunction(j.props.httpTarget?.uri, functions);
      if (!fn) continue;
      const deadline = durationSeconds(j.props.attemptDeadline) ?? defaultAttemptDeadlineSeconds;
      // Cloud Scheduler caps attempt deadlines at 30 minutes.
      const needed = Math.min(1800, timeoutOf(fn));
      if (deadline < needed)
        out.push(
          violation(
            "deadlines-cover-timeouts",
            j,
            `scheduler job ${j.props.name ?? j.name} has attemptDeadline ${deadline} s, shorter than the timeout of ${fn.props.name} (${needed} s)`,
          ),
        );
    }
    return out;
  },
};

export const noProjectWidePubSubOrTokenCreator: Rule = {
  name: "no-project-wide-pubsub-or-token-creator",
  description:
    "No project-level Pub/Sub role and no project-level token-creator role: Pub/Sub grants are scoped to topics and subscriptions, token creation to one service account.",
  check: (resources) =>
    projectGrants(resources)
      .filter(
        (g) =>
          typeof g.role === "string" &&
          (g.role.startsWith("roles/pubsub.") || tokenCreatorRoles.includes(g.role)),
      )
      .map((g) =>
        violation(
          "no-project-wide-pubsub-or-token-creator",
          g.resource,
          `${g.role} is granted on the whole project to ${g.members.join(", ")}: grant it on the topic, subscription or service account instead`,
        ),
      ),
};

export const noProjectWideRunInvoker: Rule = {
  name: "no-project-wide-run-invoker",
  description:
    "No project-level roles/run.invoker, with or without a condition: each caller is granted it on the one Cloud Run service it calls (gcp.cloudrunv2.ServiceIamMember).",
  check: (resources) =>
    projectGrants(resources)
      .filter((g) => g.role === "roles/run.invoker")
      .map((g) =>
        violation(
          "no-project-wide-run-invoker",
          g.resource,
          `roles/run.invoker is granted on the whole project to ${g.members.join(", ")}: it could call every Cloud Run service there; grant it on the service it calls instead`,
        ),
      ),
};

export const datastoreUserOnlyForHandlers: Rule = {
  name: "datastore-user-only-for-handlers",
  description:
    "roles/datastore.user (project-wide, as Firestore has no narrower IAM) goes only to service accounts that run a handler.",
  check: (resources) => {
    const handlers = new Set(
      ofType(resources, types.function)
        .map((f) => f.props.serviceConfig?.serviceAccountEmail)
        .filter((e): e is string => typeof e === "string")
        .map((e) => `serviceAccount:${e}`),
    );
    return projectGrants(resources)
      .filter((g) => g.role === "roles/datastore.user")
      .flatMap((g) =>
        g.members
          .filter((m) => !handlers.has(m))
          .map((m) =>
            violation(
              "datastore-user-only-for-handlers",
              g.resource,
              `roles/datastore.user is granted to ${m}, which runs no handler: only the handlers read and write the ledger`,
            ),
          ),
      );
  },
};

export const alertsNotify: Rule = {
  name: "alerts-notify",
  description: "When a notification channel is configured, every alert policy sends to at least one channel.",
  check: (resources) => {
    if (ofType(resources, types.notificationChannel).length === 0) return [];
    return ofType(resources, types.alertPolicy)
      .filter(
        (a) => !Array.isArray(a.props.notificationChannels) || a.props.notificationChannels.length === 0,
      )
      .map((a) =>
        violation(
          "alerts-notify",
          a,
          `alert policy ${a.props.displayName ?? a.name} has no notification channel although one is configured: it would fire silently`,
        ),
      );
  },
};

export const monitoringFiltersValid: Rule = {
  name: "monitoring-filters-valid",
  description:
    'Every Monitoring filter (alert conditions, dashboard charts) follows Cloud Monitoring\'s filter grammar and names one metric type: Logging forms such as `label=("a" OR "b")` are refused with 400.',
  check: (resources) => {
    const out: Violation[] = [];
    const emitted: [ResourceRecord, EmittedFilter[]][] = [];
    for (const a of ofType(resources, types.alertPolicy)) {
      try {
        emitted.push([a, alertPolicyFilters(a.props)]);
      } catch (err) {
        out.push(
          violation(
            "monitoring-filters-valid",
            a,
            `alert policy ${a.props.displayName ?? a.name}: ${(err as Error).message}`,
          ),
        );
      }
    }
    for (const d of ofType(resources, types.dashboard))
      emitted.push([d, dashboardFilters(d.props.dashboardJson ?? "{}")]);
    for (const [r, filters] of emitted)
      for (const f of filters)
        for (const problem of checkTimeSeriesFilter(f.filter))
          out.push(
            violation(
              "monitoring-filters-valid",
              r,
              `${r.props.displayName ?? r.name} ${f.path} is not a valid Monitoring filter: ${problem} (filter: ${f.filter})`,
            ),
          );
    return out;
  },
};

export const alertsWaitForMetricReadiness: Rule = {
  name: "alerts-wait-for-metric-readiness",
  description:
    "Every alert policy and dashboard depends on the readiness gate of each log-based metric its filters name, and that gate depends on the metric (Monitoring answers 404 for a new log-based metric for up to ~10 minutes).",
  check: (resources) => {
    const { dependsOn } = dependencyGraph(resources);
    const metrics = ofType(resources, types.logMetric);
    const gates = ofType(resources, types.metricReadiness);
    const out: Violation[] = [];
    // Filters that do not parse (or condition kinds not known) are monitoring-filters-valid's to report.
    const lenient = <T>(f: () => T[]): T[] => {
      try {
        return f();
      } catch {
        return [];
      }
    };
    const users = [
      ...ofType(resources, types.alertPolicy).map(
        (a) => [a, lenient(() => alertPolicyFilters(a.props))] as const,
      ),
      ...ofType(resources, types.dashboard).map(
        (d) => [d, lenient(() => dashboardFilters(d.props.dashboardJson ?? "{}"))] as const,
      ),
    ];
    for (const [r, filters] of users) {
      const what = `${r.props.displayName ?? r.name}`;
      for (const name of new Set(filters.flatMap((f) => lenient(() => userMetricsNamed(f.filter))))) {
        const metric = metrics.find((m) => m.props.name === name);
        if (!metric) {
          out.push(
            violation(
              "alerts-wait-for-metric-readiness",
              r,
              `${what} names log-based metric ${name}, which the stack does not declare`,
            ),
          );
          continue;
        }
        const gate = gates.find(
          (g) => g.props.metricType === `${userMetricPrefix}${name}` && dependsOn(g, metric),
        );
        if (!gate) {
          out.push(
            violation(
              "alerts-wait-for-metric-readiness",
              r,
              `log-based metric ${name} has no readiness gate that depends on it: ${what} would be created before Cloud Monitoring knows the metric (404)`,
            ),
          );
          continue;
        }
        if (!dependsOn(r, gate))
          out.push(
            violation(
              "alerts-wait-for-metric-readiness",
              r,
              `${what} names log-based metric ${name} but does not depend on its readiness gate ${gate.name}: its creation can fail with 404 on a first pulumi up`,
            ),
          );
      }
    }
    return out;
  },
};

/** Records that grant a role to `member` (any IAM member/binding/policy resource). */
function grantsTo(resources: ResourceRecord[], member: string): ResourceRecord[] {
  return resources.filter(
    (r) =>
      /IAM(Member|Binding|Policy)|Iam(Member|Binding|Policy)/.test(r.type) &&
      principalsIn(r.props).includes(member),
  );
}

export const functionBuildsWaitForGrants: Rule = {
  name: "function-builds-wait-for-grants",
  description:
    "Every function depends on every grant to its build service account and on a propagation wait that comes after those grants (IAM changes take minutes to propagate; a build started earlier fails).",
  check: (resources) => {
    const { dependsOn } = dependencyGraph(resources);
    const waits = ofType(resources, types.propagationWait);
    const out: Violation[] = [];
    for (const f of ofType(resources, types.function)) {
      const member = serviceAccountMember(f.props.buildConfig?.serviceAccount);
      if (!member) continue;
      const grants = grantsTo(resources, member);
      for (const g of grants)
        if (!dependsOn(f, g))
          out.push(
            violation(
              "function-builds-wait-for-grants",
              f,
              `function ${f.props.name ?? f.name} does not depend on ${g.name} (${g.props.role} for its build account ${member}): the build may start before the grant exists`,
            ),
          );
      const wait = waits.find((w) => dependsOn(f, w) && grants.every((g) => dependsOn(w, g)));
      if (!wait)
        out.push(
          violation(
            "function-builds-wait-for-grants",
            f,
            `function ${f.props.name ?? f.name} does not wait for IAM propagation after the grants to its build account ${member} (a propagation wait that depends on all ${grants.length} of them)`,
          ),
        );
    }
    return out;
  },
};

/** Project-level roles granted without a condition on purpose (the resource has no narrower IAM). */
export const unconditionalProjectRoles = [
  "roles/datastore.user", // Firestore has no per-collection IAM
  "roles/logging.logWriter", // logs are written to the project
  "roles/artifactregistry.writer", // gcf-artifacts is created by Cloud Functions on first deploy
];

export const projectGrantsScoped: Rule = {
  name: "project-grants-scoped",
  description: `A project-level grant carries an IAM condition unless its role is one of ${unconditionalProjectRoles.join(", ")} or a custom role of this stack; a condition on a Cloud Storage role names buckets as projects/_/buckets/….`,
  check: (resources) => {
    const customRoles = new Set(
      ofType(resources, types.projectCustomRole).flatMap((c) => [
        c.props.name,
        `projects/${c.props.project}/roles/${c.props.roleId}`,
      ]),
    );
    const out: Violation[] = [];
    for (const g of projectGrants(resources)) {
      const expression = g.condition?.expression?.trim();
      if (!expression) {
        if (!unconditionalProjectRoles.includes(g.role) && !customRoles.has(g.role))
          out.push(
            violation(
              "project-grants-scoped",
              g.resource,
              `${g.role} is granted on the whole project to ${g.members.join(", ")} without a condition: scope it to the resource (or an IAM condition)`,
            ),
          );
        continue;
      }
      // Cloud Storage resource names in IAM conditions are projects/_/buckets/BUCKET[/objects/OBJECT]
      // (https://cloud.google.com/iam/docs/conditions-resource-attributes): any other form matches nothing.
      if (
        g.role.startsWith("roles/storage.") &&
        !/resource\.name\.startsWith\("projects\/_\/buckets\/[^"]+"\)/.test(expression)
      )
        out.push(
          violation(
            "project-grants-scoped",
            g.resource,
            `the condition on ${g.role} for ${g.members.join(", ")} does not scope by resource.name.startsWith("projects/_/buckets/…") (Cloud Storage's resource-name form): ${expression}`,
          ),
        );
    }
    return out;
  },
};

export const pushIdentityTokenCreator: Rule = {
  name: "push-identity-token-creator",
  description:
    "The Pub/Sub service agent holds roles/iam.serviceAccountTokenCreator on every push subscription's OIDC service account (needed to mint push tokens on projects whose agent predates 8 April 2021), granted on that account only.",
  check: (resources) => {
    const grants = [
      ...ofType(resources, types.serviceAccountIamMember).map((g) => ({
        sa: g.props.serviceAccountId,
        role: g.props.role,
        members: [g.props.member],
      })),
      ...ofType(resources, types.serviceAccountIamBinding).map((g) => ({
        sa: g.props.serviceAccountId,
        role: g.props.role,
        members: g.props.members ?? [],
      })),
    ];
    const out: Violation[] = [];
    for (const s of ofType(resources, types.subscription)) {
      const email = s.props.pushConfig?.oidcToken?.serviceAccountEmail;
      if (!email) continue;
      const ok = grants.some(
        (g) =>
          lastSegment(g.sa) === email &&
          tokenCreatorRoles.includes(g.role) &&
          g.members.some((m: string) => pubsubAgentPattern.test(m ?? "")),
      );
      if (!ok)
        out.push(
          violation(
            "push-identity-token-creator",
            s,
            `push subscription ${s.props.name ?? s.name} signs its OIDC tokens as ${email}, but the Pub/Sub service agent has no roles/iam.serviceAccountTokenCreator on that account`,
          ),
        );
    }
    return out;
  },
};

/** Permissions of the predefined roles this rule can reason about (https://cloud.google.com/bigquery/docs/access-control). */
const predefinedRolePermissions: Record<string, string[]> = {
  "roles/bigquery.jobUser": ["bigquery.jobs.create"],
  "roles/bigquery.admin": ["bigquery.jobs.create", "bigquery.jobs.get"],
};
/**
 * What the BigQuery sink's export ladder calls (functions/adapters/bigqueryResultSink.ts): jobs.insert
 * (bigquery.jobs.create) and jobs.get on a job another finalizer may have created. jobs.get on a job
 * one did not create "requires the bigquery.jobs.get permission on the job resource"; a creator needs
 * only bigquery.jobs.create (https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/get).
 */
export const exportPermissions = ["bigquery.jobs.create", "bigquery.jobs.get"];

export const bigqueryExportersCanTakeOver: Rule = {
  name: "bigquery-exporters-can-take-over",
  description:
    "Every function configured with the BigQuery sink runs as an identity holding bigquery.jobs.create and bigquery.jobs.get on the project (unconditionally), so it can take over an export another identity started.",
  check: (resources) => {
    const customRoles = new Map<string, string[]>();
    for (const c of ofType(resources, types.projectCustomRole)) {
      const permissions: string[] = c.props.permissions ?? [];
      customRoles.set(`projects/${c.props.project}/roles/${c.props.roleId}`, permissions);
      if (typeof c.props.name === "string") customRoles.set(c.props.name, permissions);
    }
    const grants = projectGrants(resources).filter((g) => !g.condition?.expression);
    const out: Violation[] = [];
    for (const f of ofType(resources, types.function)) {
      if (f.props.serviceConfig?.environmentVariables?.TALLY_SINK !== "bigquery") continue;
      const member = serviceAccountMember(f.props.serviceConfig?.serviceAccountEmail);
      if (!member) continue;
      const held = new Set(
        grants
          .filter((g) => g.members.includes(member))
          .flatMap((g) => customRoles.get(g.role) ?? predefinedRolePermissions[g.role] ?? []),
      );
      const missing = exportPermissions.filter((p) => !held.has(p));
      if (missing.length > 0)
        out.push(
          violation(
            "bigquery-exporters-can-take-over",
            f,
            `function ${f.props.name ?? f.name} exports results to BigQuery as ${member}, which lacks ${missing.join(", ")} on the project: taking over another finalizer's load job would fail with 403 and the batch stay finalizing`,
          ),
        );
    }
    return out;
  },
};

/** The secrets a function mounts (secret environment variables and secret volumes), by secret id. */
function mountedSecrets(f: ResourceRecord): string[] {
  const sc = f.props.serviceConfig ?? {};
  const refs: unknown[] = [
    ...(sc.secretEnvironmentVariables ?? []).map((s: { secret?: unknown }) => s.secret),
    ...(sc.secretVolumes ?? []).map((s: { secret?: unknown }) => s.secret),
  ];
  return refs.map(lastSegment).filter((s): s is string => typeof s === "string");
}

export const secretGrantsScoped: Rule = {
  name: "secret-grants-scoped",
  description:
    "Secret Manager access is granted one secret to one account (gcp.secretmanager.SecretIamMember, roles/secretmanager.secretAccessor), only to the runtime account of a function that mounts that secret, and every mounted secret is so granted; never on the project, never a binding or policy of several members.",
  check: (resources) => {
    const out: Violation[] = [];
    for (const g of projectGrants(resources))
      if (typeof g.role === "string" && g.role.startsWith("roles/secretmanager."))
        out.push(
          violation(
            "secret-grants-scoped",
            g.resource,
            `${g.role} is granted on the whole project to ${g.members.join(", ")}: it would read every secret there; grant roles/secretmanager.secretAccessor on the one secret instead`,
          ),
        );
    for (const r of [
      ...ofType(resources, types.secretIamBinding),
      ...ofType(resources, types.secretIamPolicy),
    ])
      out.push(
        violation(
          "secret-grants-scoped",
          r,
          `${r.type} ${r.name} is authoritative over the secret's members: grant each account with gcp.secretmanager.SecretIamMember instead`,
        ),
      );
    const functions = ofType(resources, types.function);
    // Runtime account → the secrets its functions mount.
    const mountedBy = new Map<string, Set<string>>();
    for (const f of functions) {
      const member = serviceAccountMember(f.props.serviceConfig?.serviceAccountEmail);
      if (!member) continue;
      const set = mountedBy.get(member) ?? new Set<string>();
      for (const s of mountedSecrets(f)) set.add(s);
      mountedBy.set(member, set);
    }
    const grants = ofType(resources, types.secretIamMember);
    for (const g of grants) {
      const secret = lastSegment(g.props.secretId);
      const member: unknown = g.props.member;
      if (g.props.role !== "roles/secretmanager.secretAccessor")
        out.push(
          violation(
            "secret-grants-scoped",
            g,
            `${g.props.role} on secret ${secret} to ${member}: a worker only reads its secrets (roles/secretmanager.secretAccessor)`,
          ),
        );
      if (typeof member !== "string" || !member.startsWith("serviceAccount:")) {
        out.push(
          violation(
            "secret-grants-scoped",
            g,
            `secret ${secret} is granted to ${member}, which is not one service account`,
          ),
        );
        continue;
      }
      if (!mountedBy.get(member)?.has(secret ?? ""))
        out.push(
          violation(
            "secret-grants-scoped",
            g,
            `secret ${secret} is granted to ${member}, but no function running as that account mounts it: the grant is wider than any pipeline needs`,
          ),
        );
    }
    for (const f of functions) {
      const member = serviceAccountMember(f.props.serviceConfig?.serviceAccountEmail);
      for (const secret of mountedSecrets(f))
        if (
          !grants.some(
            (g) =>
              lastSegment(g.props.secretId) === secret &&
              g.props.member === member &&
              g.props.role === "roles/secretmanager.secretAccessor",
          )
        )
          out.push(
            violation(
              "secret-grants-scoped",
              f,
              `function ${f.props.name ?? f.name} mounts secret ${secret} but its account ${member} has no roles/secretmanager.secretAccessor on it: the revision would fail to deploy`,
            ),
          );
    }
    return out;
  },
};

/** A worker's effective delivery settings: the stack-wide TALLY_* values, then its pipeline's own. */
function workerDelivery(env: Record<string, string>): Record<string, number> {
  const base: Record<string, number> = {
    ackDeadlineSeconds: Number(env.TALLY_ACK_DEADLINE_SECONDS),
    workerTimeoutSeconds: Number(env.TALLY_WORKER_TIMEOUT_SECONDS),
    maxDeliveryAttempts: Number(env.TALLY_MAX_DELIVERY_ATTEMPTS),
  };
  let own: Record<string, number> = {};
  try {
    own =
      (JSON.parse(env.TALLY_PIPELINE_DELIVERY ?? "{}") as Record<string, Record<string, number>>)[
        env.TALLY_WORKER_PIPELINE ?? ""
      ] ?? {};
  } catch {
    own = {};
  }
  return { ...base, ...own };
}

export const pipelineDeliveryConsistent: Rule = {
  name: "pipeline-delivery-consistent",
  description:
    "Every pipeline's worker (a function labelled tally-handler=worker) is the push target of exactly one subscription, and the delivery settings it runs with (ack deadline, request timeout, delivery attempts) are that subscription's and its own function timeout.",
  check: (resources) => {
    const functions = ofType(resources, types.function);
    const subscriptions = ofType(resources, types.subscription);
    const out: Violation[] = [];
    for (const f of functions.filter((x) => x.props.labels?.["tally-handler"] === "worker")) {
      const name = f.props.name ?? f.name;
      const fed = subscriptions.filter(
        (s) => targetFunction(s.props.pushConfig?.pushEndpoint, functions) === f,
      );
      if (fed.length !== 1) {
        out.push(
          violation(
            "pipeline-delivery-consistent",
            f,
            `worker ${name} is the push target of ${fed.length} subscriptions (${fed.map((s) => s.props.name).join(", ") || "none"}): each pipeline's worker receives exactly its own subscription`,
          ),
        );
        continue;
      }
      const s = fed[0]!;
      const env = f.props.serviceConfig?.environmentVariables;
      if (!env || typeof env !== "object") continue;
      const runs = workerDelivery(env);
      const declared: [string, number | undefined, string][] = [
        [
          "ackDeadlineSeconds",
          s.props.ackDeadlineSeconds ?? defaultAckDeadlineSeconds,
          `subscription ${s.props.name}'s ackDeadlineSeconds`,
        ],
        [
          "maxDeliveryAttempts",
          s.props.deadLetterPolicy?.maxDeliveryAttempts,
          `subscription ${s.props.name}'s deadLetterPolicy.maxDeliveryAttempts`,
        ],
        [
          "workerTimeoutSeconds",
          f.props.serviceConfig?.timeoutSeconds ?? defaultFunctionTimeoutSeconds,
          `its function timeoutSeconds`,
        ],
      ];
      for (const [setting, value, where] of declared)
        if (value !== undefined && runs[setting] !== value)
          out.push(
            violation(
              "pipeline-delivery-consistent",
              f,
              `worker ${name} runs with ${setting} ${runs[setting]} but ${where} is ${value}: the worker and Pub/Sub would disagree about this pipeline's delivery`,
            ),
          );
    }
    return out;
  },
};

export const rules: Rule[] = [
  subscriptionsNeverExpire,
  subscriptionsDeadLetter,
  deadLetterGrants,
  deadLetterTopicsSubscribed,
  noPublicPrincipals,
  pushAndSchedulerUseOidc,
  deadlinesCoverTimeouts,
  noProjectWidePubSubOrTokenCreator,
  noProjectWideRunInvoker,
  datastoreUserOnlyForHandlers,
  alertsNotify,
  monitoringFiltersValid,
  alertsWaitForMetricReadiness,
  functionBuildsWaitForGrants,
  projectGrantsScoped,
  pushIdentityTokenCreator,
  bigqueryExportersCanTakeOver,
  secretGrantsScoped,
  pipelineDeliveryConsistent,
];

export function checkAll(resources: ResourceRecord[]): Violation[] {
  return rules.flatMap((r) => r.check(resources));
}
