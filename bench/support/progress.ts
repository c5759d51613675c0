// Progress lines on stderr (stdout stays free for the final table): one line per phase step, with
// the time since the bench started.
const started = Date.now();

export function progress(phase: string, message: string): void {
  const s = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[${s}s] ${phase.padEnd(10)} ${message}\n`);
}

export type Progress = (message: string) => void;
export const phaseProgress =
  (phase: string): Progress =>
  (message) =>
    progress(phase, message);
