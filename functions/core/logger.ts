// Structured logs in Cloud Logging's format: one JSON object per line on stdout, with `severity`,
// `message`, `time`, an `event` name for every lifecycle step and batchId/itemId fields. The
// stack's log-based metrics and alerts (infra/monitoring.ts) filter on `jsonPayload.event`.

export type Severity = "DEBUG" | "INFO" | "WARNING" | "ERROR";
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(event: string, message: string, fields?: LogFields): void;
  info(event: string, message: string, fields?: LogFields): void;
  warn(event: string, message: string, fields?: LogFields): void;
  error(event: string, message: string, fields?: LogFields): void;
  /** A logger whose lines all carry these fields (batchId, itemId, trace…). */
  child(fields: LogFields): Logger;
}

export type LogSink = (line: string) => void;

const severityRank: Record<Severity, number> = { DEBUG: 0, INFO: 1, WARNING: 2, ERROR: 3 };

export function createLogger(opts: {
  component: string;
  sink?: LogSink;
  minSeverity?: Severity;
  fields?: LogFields;
}): Logger {
  const sink = opts.sink ?? ((line: string) => process.stdout.write(`${line}\n`));
  const min =
    severityRank[opts.minSeverity ?? (process.env.TALLY_LOG_LEVEL as Severity | undefined) ?? "INFO"] ?? 1;
  const base: LogFields = { component: opts.component, ...opts.fields };
  const emit = (severity: Severity, event: string, message: string, fields?: LogFields) => {
    if (severityRank[severity] < min) return;
    sink(JSON.stringify({ severity, message, time: new Date().toISOString(), event, ...base, ...fields }));
  };
  return {
    debug: (e, m, f) => emit("DEBUG", e, m, f),
    info: (e, m, f) => emit("INFO", e, m, f),
    warn: (e, m, f) => emit("WARNING", e, m, f),
    error: (e, m, f) => emit("ERROR", e, m, f),
    child: (fields) => createLogger({ ...opts, sink, fields: { ...opts.fields, ...fields } }),
  };
}

/** Cloud Run passes `X-Cloud-Trace-Context: TRACE/SPAN;o=1`; Cloud Logging links lines by this field. */
export function traceField(header: string | undefined, projectId: string | undefined): LogFields {
  if (!header || !projectId) return {};
  const trace = header.split("/")[0];
  return trace ? { "logging.googleapis.com/trace": `projects/${projectId}/traces/${trace}` } : {};
}
