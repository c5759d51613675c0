// Runs the Pulumi program under `pulumi.runtime.setMocks` (no engine, no cloud) and records every
// resource it registers as a policy record ({type, name, urn, props, dependencies}), so tests can
// assert properties and run the policy rules over them. `dependencies` are the URNs the SDK sends
// the engine as the resource's dependencies (explicit dependsOn and the resources its inputs came
// from), read from the register request the way the engine would: the order a real `up` follows. The mock fills in the outputs the program reads
// (service-account emails, the Pub/Sub service agent, topic ids, dashboard ids) the way Google does.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { type Bundle, buildBundle } from "../../../infra/bundle/buildBundle";
import type { ResourceRecord } from "../../../infra/policy/rules";
import { createStack, type StackOutputs } from "../../../infra/stack";

export const mockProject = { projectId: "tally-test-project", number: "123456789012" };

function mockOutputs(args: pulumi.runtime.MockResourceArgs): { id: string; state: Record<string, unknown> } {
  // biome-ignore lint/suspicious/noExplicitAny: mock inputs are arbitrary provider JSON.
  const i = args.inputs as Record<string, any>;
  const p = mockProject.projectId;
  switch (args.type) {
    case "gcp:serviceaccount/account:Account": {
      const email = `${i.accountId}@${p}.iam.gserviceaccount.com`;
      const id = `projects/${p}/serviceAccounts/${email}`;
      return { id, state: { ...i, email, member: `serviceAccount:${email}`, name: id } };
    }
    case "gcp:projects/serviceIdentity:ServiceIdentity": {
      const email = `service-${mockProject.number}@gcp-sa-pubsub.iam.gserviceaccount.com`;
      return { id: `${args.name}-id`, state: { ...i, email, member: `serviceAccount:${email}` } };
    }
    case "gcp:pubsub/topic:Topic":
      return { id: `projects/${p}/topics/${i.name}`, state: i };
    case "gcp:pubsub/subscription:Subscription":
      return { id: `projects/${p}/subscriptions/${i.name}`, state: i };
    case "gcp:cloudfunctionsv2/function:Function":
      return {
        id: `projects/${p}/locations/${i.location}/functions/${i.name}`,
        state: {
          ...i,
          url: `https://${i.location}-${p}.cloudfunctions.net/${i.name}`,
          serviceConfig: { ...i.serviceConfig, uri: `https://${i.name}-abc123xyz-uc.a.run.app` },
        },
      };
    case "gcp:monitoring/dashboard:Dashboard":
      return { id: `projects/${mockProject.number}/dashboards/${args.name}-0001`, state: i };
    case "gcp:monitoring/notificationChannel:NotificationChannel": {
      const name = `projects/${p}/notificationChannels/4242`;
      return { id: name, state: { ...i, name } };
    }
    case "gcp:projects/iAMCustomRole:IAMCustomRole": {
      const name = `projects/${i.project}/roles/${i.roleId}`;
      return { id: name, state: { ...i, name } };
    }
    case "gcp:logging/projectSink:ProjectSink":
      return {
        id: `projects/${p}/sinks/${i.name}`,
        state: {
          ...i,
          writerIdentity: `serviceAccount:service-${mockProject.number}@gcp-sa-logging.iam.gserviceaccount.com`,
        },
      };
    default:
      return { id: `${args.name}-id`, state: i };
  }
}

/** Waits until every registration the program started (including those inside applies) is done. */
export async function registrationsSettled(): Promise<void> {
  const runtime = pulumi.runtime as unknown as { waitForRPCs?: () => Promise<void> };
  if (!runtime.waitForRPCs) throw new Error("@pulumi/pulumi no longer exposes runtime.waitForRPCs");
  await runtime.waitForRPCs();
}

function resolve<T>(o: pulumi.Output<T>): Promise<T> {
  return new Promise((ok) => o.apply((v) => ok(v)));
}

export interface StackRun {
  resources: ResourceRecord[];
  outputs: Record<string, unknown>;
  ofType(type: string): ResourceRecord[];
  /** The one resource with this logical name. */
  named(name: string): ResourceRecord;
}

let sharedBundle: Bundle | undefined;
/** The real bundle, built once per test file (entry not required: the bundle test checks that). */
export function testBundle(): Bundle {
  sharedBundle ??= buildBundle({
    outDir: mkdtempSync(join(tmpdir(), "tally-infra-bundle-")),
    requireEntry: false,
  });
  return sharedBundle;
}

/** Records hold plain JSON, so tests can copy and compare them; assets are noted by kind. */
function plain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(plain);
  if (pulumi.asset.Asset.isInstance(value) || pulumi.asset.Archive.isInstance(value))
    return `[${(value as object).constructor.name}]`;
  if (value && typeof value === "object")
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

/** The register request the SDK sends the monitor (the parts read here). */
interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getDependenciesList(): string[];
}

/** A fresh mock monitor for `stack`; every resource registered from now on lands in `resources`. */
export async function installMocks(stack = "dev"): Promise<{ resources: ResourceRecord[] }> {
  const resources: ResourceRecord[] = [];
  const dependenciesByUrn = new Map<string, string[]>();
  const urnOf = (type: string, name: string) => `urn:pulumi:${stack}::tally::${type}::${name}`;
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const { id, state } = mockOutputs(args);
        const urn = urnOf(args.type, args.name);
        resources.push({
          type: args.type,
          name: args.name,
          urn,
          props: plain(state) as Record<string, unknown>,
          dependencies: dependenciesByUrn.get(urn) ?? [],
        });
        return { id, state };
      },
      call(args) {
        if (args.token === "gcp:organizations/getProject:getProject")
          return { ...mockProject, name: mockProject.projectId, id: `projects/${mockProject.projectId}` };
        throw new Error(`unexpected invoke ${args.token}`);
      },
    },
    "tally",
    stack,
    false,
  );
  // The mock monitor hands newResource no dependencies; read them off the request on the way in.
  const monitor = pulumi.runtime.getMonitor() as unknown as {
    registerResource(req: RegisterRequest, callback: unknown): unknown;
  };
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, callback) => {
    if (req.getParent())
      throw new Error("the recorder assumes resources without parents (URNs as the mock builds them)");
    dependenciesByUrn.set(urnOf(req.getType(), req.getName()), req.getDependenciesList());
    return register(req, callback);
  };
  return { resources };
}

/** Replaces the stack configuration: `tally:` keys (bare names get the namespace) plus gcp:project. */
export function setStackConfig(config: Record<string, string>): void {
  pulumi.runtime.setAllConfig({
    "gcp:project": mockProject.projectId,
    ...Object.fromEntries(Object.entries(config).map(([k, v]) => [k.includes(":") ? k : `tally:${k}`, v])),
  });
}

/** Runs the program with this configuration on a fresh mock monitor and waits for every registration. */
export async function runStack(
  config: Record<string, string> = {},
  opts: { stack?: string; bundle?: () => Bundle } = {},
): Promise<StackRun> {
  const { resources } = await installMocks(opts.stack ?? "dev");
  setStackConfig(config);
  const stackOutputs: StackOutputs = createStack({ bundle: opts.bundle ?? testBundle });
  // Outputs nest (serviceAccounts by role, pipelines by name → their outputs): resolved at any depth.
  const resolveDeep = async (v: unknown): Promise<unknown> => {
    if (pulumi.Output.isInstance(v)) return resolve(v as pulumi.Output<unknown>);
    if (v && typeof v === "object")
      return Object.fromEntries(
        await Promise.all(Object.entries(v).map(async ([k, inner]) => [k, await resolveDeep(inner)])),
      );
    return v;
  };
  const outputs = (await resolveDeep(stackOutputs)) as Record<string, unknown>;
  await registrationsSettled();
  return {
    resources,
    outputs,
    ofType: (type) => resources.filter((r) => r.type === type),
    named: (name) => {
      const found = resources.filter((r) => r.name === name);
      if (found.length !== 1) throw new Error(`expected one resource named ${name}, found ${found.length}`);
      return found[0]!;
    },
  };
}
