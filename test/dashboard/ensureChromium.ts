// Makes Debian's `chromium` available for the dashboard test. Playwright's own browser download
// cannot work here (only the npm and Debian registries are reachable), so the test drives the
// distribution's package through playwright-core with `executablePath`. When /usr/bin/chromium is
// absent this runs `apt-get update` then `apt-get install -y chromium`, saying what it does.
// Outside CI a failed install skips the dashboard test loudly; in CI (CI set) it fails the run.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

export const chromiumPath = "/usr/bin/chromium";

export type ChromiumAvailability = { ok: true; path: string } | { ok: false; reason: string };

function run(cmd: string, args: string[]): { ok: boolean; output: string } {
  console.log(`[ensureChromium] running: ${cmd} ${args.join(" ")}`);
  const r = spawnSync(cmd, args, {
    encoding: "utf8",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    timeout: 15 * 60_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  const output = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  if (r.error) return { ok: false, output: `${output}\n${r.error.message}` };
  return { ok: r.status === 0, output };
}

function tail(text: string, lines = 15): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}

/** Installs chromium when missing. Throws when CI is set and it cannot be had. */
export function ensureChromium(): ChromiumAvailability {
  if (existsSync(chromiumPath)) return { ok: true, path: chromiumPath };
  console.log(`[ensureChromium] ${chromiumPath} is missing: installing Debian's chromium package`);
  const steps: Array<[string, string[]]> = [
    ["apt-get", ["update"]],
    ["apt-get", ["install", "-y", "--no-install-recommends", "chromium"]],
  ];
  let reason = "";
  for (const [cmd, args] of steps) {
    const r = run(cmd, args);
    if (!r.ok) {
      reason = `\`${cmd} ${args.join(" ")}\` failed:\n${tail(r.output)}`;
      break;
    }
  }
  if (!reason && !existsSync(chromiumPath))
    reason = `the install finished but ${chromiumPath} is still missing`;
  if (!reason) {
    console.log(`[ensureChromium] installed ${chromiumPath}`);
    return { ok: true, path: chromiumPath };
  }
  const message = `chromium is not available for the dashboard test: ${reason}`;
  if (process.env.CI) throw new Error(message);
  console.warn(
    `\n${"!".repeat(78)}\n!! SKIPPING the dashboard browser test: ${message}\n!! Install it with: apt-get update && apt-get install -y chromium\n${"!".repeat(78)}\n`,
  );
  return { ok: false, reason: message };
}

// `npx tsx test/dashboard/ensureChromium.ts` installs it by hand.
if (require.main === module) {
  const r = ensureChromium();
  console.log(r.ok ? `chromium: ${r.path}` : r.reason);
  process.exitCode = r.ok ? 0 : 1;
}
