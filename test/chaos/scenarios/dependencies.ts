// F7: batch dependencies, wide and deep. One parent with 50 dependent children (the incident: 0 of
// 50 children queued), and a chain of 10 whose 5th link fails: links 1–4 succeed in order, the 5th
// fails, and 6–10 fail with a reason naming the failed dependency — their items never run, and
// every batch still satisfies the invariant.
import {
  assertInvariant,
  check,
  checkNone,
  demoItems,
  epoch,
  finalDeadlineMs,
  itemsById,
  outcomeSummary,
  type Scenario,
  unexpectedItems,
  waitFinal,
} from "./scenario";

export const fanOut = 50;
export const chainLength = 10;
export const failingLink = 5;

export const dependencies: Scenario = {
  id: "F7-dependencies",
  title: `dependencies: 1 → ${fanOut} fan-out and a chain of ${chainLength} failing at link ${failingLink} (F7)`,
  stack: "shared",
  async run(env, _scale, say) {
    const parent = {
      id: env.batchId("dep-parent"),
      items: demoItems("pp-", 5, (i) => ({ value: i, sleepMs: 1500 })),
    };
    const children = Array.from({ length: fanOut }, (_, c) => ({
      id: env.batchId(`dep-child-${c + 1}`),
      items: demoItems(`ch${c + 1}-`, 3, (i) => ({ value: i })),
    }));
    const chain = Array.from({ length: chainLength }, (_, l) => ({
      id: env.batchId(`dep-chain-${l + 1}`),
      items: demoItems(`l${l + 1}-`, 3, (i) =>
        l + 1 === failingLink && i === 2 ? { value: i, permanent: true } : { value: i, sleepMs: 100 },
      ),
    }));

    await env.api.submit({ id: parent.id, pipeline: "demo", items: parent.items });
    for (let i = 0; i < children.length; i += 10)
      await Promise.all(
        children
          .slice(i, i + 10)
          .map((c) => env.api.submit({ id: c.id, pipeline: "demo", items: c.items, dependsOn: [parent.id] })),
      );
    for (const [l, link] of chain.entries())
      await env.api.submit({
        id: link.id,
        pipeline: "demo",
        failureThreshold: 0,
        items: link.items,
        ...(l > 0 && { dependsOn: [chain[l - 1]!.id] }),
      });

    const all = [parent, ...children, ...chain];
    const deadline = finalDeadlineMs(all.length * 3, chainLength * 30_000);
    const finals = new Map(
      await Promise.all(all.map(async (b) => [b.id, await waitFinal(env, b.id, deadline)] as const)),
    );
    for (const b of all)
      await assertInvariant(
        env,
        b.id,
        b.items.map((i) => i.id),
      );

    const problems: string[] = [];
    const parentDone = epoch(finals.get(parent.id)!.finishedAt)!;
    let worstStart = 0;
    for (const c of children) {
      const f = finals.get(c.id)!;
      if (f.status !== "succeeded") problems.push(`${c.id}: ${f.status} (${f.reason}); expected succeeded`);
      const started = epoch(f.startedAt);
      if (started === null || started < parentDone)
        problems.push(
          `${c.id}: started ${f.startedAt}, before its parent finished (${finals.get(parent.id)!.finishedAt})`,
        );
      else worstStart = Math.max(worstStart, started - parentDone);
    }
    for (const [l, link] of chain.entries()) {
      const f = finals.get(link.id)!;
      const n = l + 1;
      const expected = n < failingLink ? "succeeded" : "failed";
      if (f.status !== expected)
        problems.push(`chain link ${n} (${link.id}): ${f.status}; expected ${expected}`);
      if (l > 0 && n <= failingLink) {
        const prev = finals.get(chain[l - 1]!.id)!;
        const started = epoch(f.startedAt);
        if (started === null || started < epoch(prev.finishedAt)!)
          problems.push(
            `chain link ${n}: started ${f.startedAt}, before link ${n - 1} finished (${prev.finishedAt})`,
          );
        else worstStart = Math.max(worstStart, started - epoch(prev.finishedAt)!);
      }
      if (n > failingLink) {
        const dep = chain[l - 1]!.id;
        if (!f.reason?.includes(dep))
          problems.push(`chain link ${n}: reason ${JSON.stringify(f.reason)}; expected it to name ${dep}`);
        const byId = await itemsById(env, link.id);
        problems.push(
          ...unexpectedItems(
            byId,
            link.items.map((i) => i.id),
            { status: "failed", attempt: 0 },
          ).map((p) => `chain link ${n}: ${p} (its items must never run)`),
        );
      }
    }
    checkNone(problems, "dependency outcome(s) wrong");
    check(
      finals.get(chain[failingLink - 1]!.id)!.status === "failed",
      `link ${failingLink} should have failed (a permanent error at threshold 0)`,
    );
    say(
      `fan-out: ${fanOut}/${fanOut} children ran after their parent; chain: links 1–${failingLink - 1} succeeded in order, ${failingLink}–${chainLength} failed; worst dependency start ${worstStart} ms`,
    );
    return {
      items: all.reduce((a, b) => a + b.items.length, 0),
      outcome: outcomeSummary([...finals.values()].map((f) => f.status)),
      recoveryMs: worstStart,
      recovery: "dependency finished → dependent started (worst)",
      figures: { batches: all.length },
    };
  },
};
