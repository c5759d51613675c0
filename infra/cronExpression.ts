// Validation of the five-field cron expressions Cloud Scheduler accepts (unix-cron: minute, hour,
// day of month, month, day of week; finest granularity one minute). Checked before any resource is
// registered, so a typo fails `pulumi preview` with the field that is wrong instead of a 400 from
// the Cloud Scheduler API half-way through `pulumi up`.

interface CronField {
  name: string;
  min: number;
  max: number;
  names?: string[];
}

const fields: CronField[] = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day of month", min: 1, max: 31 },
  {
    name: "month",
    min: 1,
    max: 12,
    names: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
  },
  // 7 is Sunday as well as 0 in unix-cron.
  { name: "day of week", min: 0, max: 7, names: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] },
];

function parseValue(token: string, field: CronField): number | undefined {
  if (/^\d+$/.test(token)) return Number(token);
  const i = field.names?.indexOf(token.toLowerCase()) ?? -1;
  if (i < 0) return undefined;
  return field.name === "month" ? i + 1 : i;
}

function fieldProblem(part: string, field: CronField): string | undefined {
  for (const item of part.split(",")) {
    const [range, step, extra] = item.split("/");
    if (extra !== undefined || range === undefined || range === "")
      return `${field.name} "${part}" is malformed`;
    if (step !== undefined && !/^[1-9]\d*$/.test(step))
      return `${field.name} step "${step}" must be a positive integer`;
    if (range === "*") continue;
    const bounds = range.split("-");
    if (bounds.length > 2) return `${field.name} range "${range}" is malformed`;
    const values = bounds.map((b) => parseValue(b, field));
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === undefined) return `${field.name} value "${bounds[i]}" is not a number or name`;
      if (v < field.min || v > field.max)
        return `${field.name} value ${v} is outside ${field.min}..${field.max}`;
    }
    if (values.length === 2 && values[0]! > values[1]!)
      return `${field.name} range "${range}" runs backwards`;
  }
  return undefined;
}

/** Problems with a unix-cron expression; empty when Cloud Scheduler will accept it. */
export function cronProblems(expression: string): string[] {
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== fields.length || parts[0] === "")
    return [
      `expected 5 space-separated fields (minute hour day-of-month month day-of-week), got ${parts[0] === "" ? 0 : parts.length}`,
    ];
  const problems: string[] = [];
  parts.forEach((part, i) => {
    const p = fieldProblem(part, fields[i]!);
    if (p) problems.push(p);
  });
  return problems;
}
