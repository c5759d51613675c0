// The policy pack real previews run: `pulumi preview --policy-pack infra/policy`. Each rule is a plain
// function (rules.ts) that the test suite also runs over the resources recorded by the Pulumi mocks.
import { PolicyPack, type StackValidationPolicy } from "@pulumi/policy";
import { type ResourceRecord, rules } from "./rules";

new PolicyPack("tally", {
  description: "Tally's delivery, IAM and alerting invariants (see infra/policy/rules.ts)",
  enforcementLevel: "mandatory",
  policies: rules.map(
    (rule): StackValidationPolicy => ({
      name: rule.name,
      description: rule.description,
      validateStack: (args, reportViolation) => {
        const records: ResourceRecord[] = args.resources.map((r) => ({
          type: r.type,
          name: r.name,
          urn: r.urn,
          props: r.props,
          dependencies: r.dependencies.map((d) => d.urn),
        }));
        for (const v of rule.check(records)) reportViolation(v.message, v.urn);
      },
    }),
  ),
});
