// A checker for Cloud Monitoring's filter grammar (https://cloud.google.com/monitoring/api/v3/filters),
// the language of alert conditions (conditionThreshold.filter / denominatorFilter,
// conditionAbsent.filter) and of dashboard charts (timeSeriesFilter.filter). It is NOT the Logging
// query language used by log-based metrics, log sinks and conditionMatchedLog: Monitoring refuses
// Logging forms such as `resource.labels.subscription_id=("a" OR "b")` with 400 and wants
// `resource.labels.subscription_id = one_of("a", "b")`.
//
// The grammar accepted here (deliberately no wider than what Monitoring documents):
//   filter     := or
//   or         := and { "OR" and }
//   and        := unary { ["AND"] unary }          juxtaposition is an AND
//   unary      := "NOT" unary | "(" or ")" | comparison
//   comparison := selector op value
//   op         := "=" | "!=" | ":"
//   selector   := "metric.type" | "resource.type" | "project" | "group.id"
//               | ("metric" | "resource") "." ("labels" | "label") "." key
//               | "metadata" "." ("system_labels" | "user_labels") "." key
//   key        := identifier | quoted string
//   value      := string | fn "(" string ")" | "one_of" "(" string { "," string } ")"
//   fn         := "starts_with" | "ends_with" | "has_substring" | "monitoring.regex.full_match"
//   string     := double-quoted, backslash escapes
// Keywords are upper case. A value is never a parenthesised list: that is Logging syntax.
//
// On top of the grammar, a time-series filter (alert condition, chart) must name exactly one metric
// type (`metric.type = "…"`, ANDed at the top level) and may not exceed 2048 characters: the
// provider's schema for google_monitoring_alert_policy (terraform-provider-google,
// google/services/monitoring/resource_monitoring_alert_policy.go, condition_threshold.filter) says
// the filter "must specify the metric type … This field may not exceed 2048 Unicode characters".
// No Pulumi imports here: the policy pack and the tests both use it.

export type FilterNode =
  | { kind: "and" | "or"; terms: FilterNode[] }
  | { kind: "not"; term: FilterNode }
  | { kind: "cmp"; selector: string; op: "=" | "!=" | ":"; value: FilterValue };

export type FilterValue = { kind: "string"; value: string } | { kind: "fn"; name: string; args: string[] };

export type ParseResult = { ok: true; ast: FilterNode } | { ok: false; error: string };

type Token =
  | { t: "str"; v: string; at: number }
  | { t: "word"; v: string; at: number }
  | { t: "op"; v: "=" | "!=" | ":"; at: number }
  | { t: "("; at: number }
  | { t: ")"; at: number }
  | { t: ","; at: number }
  | { t: "."; at: number };

const singleArgFunctions = ["starts_with", "ends_with", "has_substring", "monitoring.regex.full_match"];
const maxFilterLength = 2048;

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '"') {
      let v = "";
      let j = i + 1;
      for (; j < src.length && src[j] !== '"'; j++) {
        if (src[j] === "\\") {
          j++;
          if (j >= src.length) break;
        }
        v += src[j];
      }
      if (j >= src.length) throw new Error(`unterminated string starting at ${i}`);
      out.push({ t: "str", v, at: i });
      i = j + 1;
    } else if (c === "!" && src[i + 1] === "=") {
      out.push({ t: "op", v: "!=", at: i });
      i += 2;
    } else if (c === "=" || c === ":") {
      out.push({ t: "op", v: c, at: i });
      i++;
    } else if (c === "(" || c === ")" || c === "," || c === ".") {
      out.push({ t: c, at: i });
      i++;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i;
      while (j < src.length && /[A-Za-z0-9_]/.test(src[j]!)) j++;
      out.push({ t: "word", v: src.slice(i, j), at: i });
      i = j;
    } else {
      throw new Error(`unexpected character ${JSON.stringify(c)} at ${i}`);
    }
  }
  return out;
}

class Parser {
  private i = 0;
  constructor(private readonly toks: Token[]) {}

  parse(): FilterNode {
    if (this.toks.length === 0) throw new Error("empty filter");
    const node = this.or();
    const rest = this.peek();
    if (rest) throw new Error(`unexpected ${describe(rest)} at ${rest.at}`);
    return node;
  }

  private peek(): Token | undefined {
    return this.toks[this.i];
  }
  private next(): Token {
    const t = this.toks[this.i++];
    if (!t) throw new Error("unexpected end of filter");
    return t;
  }
  private isWord(v: string): boolean {
    const t = this.peek();
    return t?.t === "word" && t.v === v;
  }

  private or(): FilterNode {
    const terms = [this.and()];
    while (this.isWord("OR")) {
      this.i++;
      terms.push(this.and());
    }
    return terms.length === 1 ? terms[0]! : { kind: "or", terms };
  }

  private and(): FilterNode {
    const terms = [this.unary()];
    for (;;) {
      if (this.isWord("AND")) {
        this.i++;
        terms.push(this.unary());
        continue;
      }
      const t = this.peek();
      // Juxtaposition: another term follows without an operator.
      if (t && (t.t === "(" || (t.t === "word" && t.v !== "OR"))) {
        terms.push(this.unary());
        continue;
      }
      break;
    }
    return terms.length === 1 ? terms[0]! : { kind: "and", terms };
  }

  private unary(): FilterNode {
    if (this.isWord("NOT")) {
      this.i++;
      return { kind: "not", term: this.unary() };
    }
    const t = this.peek();
    if (t?.t === "(") {
      this.i++;
      const inner = this.or();
      const close = this.next();
      if (close.t !== ")") throw new Error(`expected ) at ${close.at}, found ${describe(close)}`);
      return inner;
    }
    return this.comparison();
  }

  private comparison(): FilterNode {
    const selector = this.selector();
    const op = this.next();
    if (op.t !== "op")
      throw new Error(`expected = != or : after ${selector} at ${op.at}, found ${describe(op)}`);
    return { kind: "cmp", selector, op: op.v, value: this.value(selector) };
  }

  private dottedWords(): { words: string[]; at: number } {
    const first = this.next();
    if (first.t !== "word") throw new Error(`expected a selector at ${first.at}, found ${describe(first)}`);
    const words = [first.v];
    while (this.peek()?.t === ".") {
      this.i++;
      const w = this.next();
      if (w.t === "word") words.push(w.v);
      else if (w.t === "str") words.push(JSON.stringify(w.v));
      else throw new Error(`expected a name after . at ${w.at}`);
    }
    return { words, at: first.at };
  }

  private selector(): string {
    const { words, at } = this.dottedWords();
    const s = words.join(".");
    const [head, mid, key, ...extra] = words;
    const ok =
      (words.length === 1 && head === "project") ||
      (words.length === 2 &&
        ((head === "metric" && mid === "type") || (head === "resource" && mid === "type"))) ||
      (words.length === 2 && head === "group" && mid === "id") ||
      (extra.length === 0 &&
        key !== undefined &&
        (((head === "metric" || head === "resource") && (mid === "labels" || mid === "label")) ||
          (head === "metadata" && (mid === "system_labels" || mid === "user_labels"))));
    if (!ok) throw new Error(`unknown selector ${s} at ${at}`);
    return s;
  }

  private value(selector: string): FilterValue {
    const t = this.peek();
    if (t?.t === "str") {
      this.i++;
      return { kind: "string", value: t.v };
    }
    if (t?.t === "word") {
      const { words, at } = this.dottedWords();
      const name = words.join(".");
      const open = this.next();
      if (open.t !== "(") throw new Error(`expected ( after ${name} at ${open.at}`);
      const args: string[] = [];
      for (;;) {
        const a = this.next();
        if (a.t !== "str") throw new Error(`${name}() takes quoted strings, found ${describe(a)} at ${a.at}`);
        args.push(a.v);
        const sep = this.next();
        if (sep.t === ")") break;
        if (sep.t !== ",") throw new Error(`expected , or ) in ${name}() at ${sep.at}`);
      }
      if (name === "one_of") return { kind: "fn", name, args };
      if (singleArgFunctions.includes(name)) {
        if (args.length !== 1) throw new Error(`${name}() takes one string, got ${args.length} at ${at}`);
        return { kind: "fn", name, args };
      }
      throw new Error(`unknown function ${name} at ${at}`);
    }
    if (t?.t === "(")
      throw new Error(
        `a parenthesised list after ${selector} at ${t.at} is Logging syntax; Monitoring wants ${selector} = one_of("a", "b")`,
      );
    throw new Error(`expected a quoted string or a function after ${selector}${t ? ` at ${t.at}` : ""}`);
  }
}

function describe(t: Token): string {
  if (t.t === "str") return `string ${JSON.stringify(t.v)}`;
  if (t.t === "word") return t.v;
  if (t.t === "op") return t.v;
  return t.t;
}

/** Parses a Monitoring filter against the grammar above. */
export function parseMonitoringFilter(filter: string): ParseResult {
  try {
    return { ok: true, ast: new Parser(tokenize(filter)).parse() };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/** Comparisons ANDed at the top level (what the whole filter requires). */
function topLevelComparisons(node: FilterNode): FilterNode[] {
  return node.kind === "and" ? node.terms.flatMap(topLevelComparisons) : [node];
}

/** Every comparison anywhere in the filter. */
export function comparisons(node: FilterNode): Extract<FilterNode, { kind: "cmp" }>[] {
  if (node.kind === "cmp") return [node];
  if (node.kind === "not") return comparisons(node.term);
  return node.terms.flatMap(comparisons);
}

/**
 * Checks a time-series filter (alert condition or chart): the grammar, one `metric.type = "…"`
 * required at the top level, at most 2048 characters. Returns the problems (empty when valid).
 */
export function checkTimeSeriesFilter(filter: string): string[] {
  const problems: string[] = [];
  if (filter.length > maxFilterLength)
    problems.push(`is ${filter.length} characters long; Monitoring accepts at most ${maxFilterLength}`);
  const parsed = parseMonitoringFilter(filter);
  if (!parsed.ok) return [...problems, parsed.error];
  const metricTypes = topLevelComparisons(parsed.ast).filter(
    (n) => n.kind === "cmp" && n.selector === "metric.type" && n.op === "=" && n.value.kind === "string",
  );
  if (metricTypes.length !== 1)
    problems.push(
      `must name exactly one metric type (metric.type = "…" ANDed at the top level), found ${metricTypes.length}`,
    );
  return problems;
}

/** Prefix of log-based (user-defined) metric types in Monitoring. */
export const userMetricPrefix = "logging.googleapis.com/user/";

/** Names of the log-based metrics a Monitoring filter refers to (`metric.type = "logging.googleapis.com/user/NAME"`). */
export function userMetricsNamed(filter: string): string[] {
  const parsed = parseMonitoringFilter(filter);
  if (!parsed.ok) throw new Error(`not a Monitoring filter (${parsed.error}): ${filter}`);
  return [
    ...new Set(
      comparisons(parsed.ast)
        .filter((c) => c.selector === "metric.type" && c.value.kind === "string")
        .map((c) => (c.value as { value: string }).value)
        .filter((t) => t.startsWith(userMetricPrefix))
        .map((t) => t.slice(userMetricPrefix.length)),
    ),
  ];
}

// --- where the program's Monitoring filters live -------------------------------------------------

export interface EmittedFilter {
  /** Where it is, e.g. `conditions[0].conditionThreshold.filter`. */
  path: string;
  filter: string;
}

// biome-ignore lint/suspicious/noExplicitAny: provider JSON.
type Json = any;

/** Condition kinds whose filters are Monitoring filters, and the keys that hold them. */
const monitoringConditionFilters: Record<string, string[]> = {
  conditionThreshold: ["filter", "denominatorFilter"],
  conditionAbsent: ["filter"],
};
/** Condition kinds whose text is another language (Logging query, MQL, PromQL, SQL): not Monitoring filters. */
export const otherLanguageConditions = [
  "conditionMatchedLog",
  "conditionMonitoringQueryLanguage",
  "conditionPrometheusQueryLanguage",
  "conditionSql",
];

/**
 * The Monitoring filters of an alert policy's conditions. A condition of a kind this checker does not
 * know throws, so a new kind cannot slip past unchecked.
 */
export function alertPolicyFilters(props: Json): EmittedFilter[] {
  const out: EmittedFilter[] = [];
  (props.conditions ?? []).forEach((condition: Json, i: number) => {
    const kinds = Object.keys(condition ?? {}).filter((k) => k.startsWith("condition"));
    for (const kind of kinds) {
      if (otherLanguageConditions.includes(kind)) continue;
      const keys = monitoringConditionFilters[kind];
      if (!keys)
        throw new Error(`conditions[${i}].${kind}: a condition kind the filter checker does not know`);
      for (const key of keys) {
        const f = condition[kind]?.[key];
        if (typeof f === "string") out.push({ path: `conditions[${i}].${kind}.${key}`, filter: f });
      }
    }
  });
  return out;
}

/**
 * The Monitoring filters of a dashboard (every `filter` string under a widget's time-series query:
 * timeSeriesFilter, timeSeriesFilterRatio numerator/denominator, …). A logs panel's filter is a
 * Logging query and is skipped.
 */
export function dashboardFilters(dashboardJson: string): EmittedFilter[] {
  const out: EmittedFilter[] = [];
  const walk = (v: Json, path: string) => {
    if (Array.isArray(v)) {
      for (const [i, x] of v.entries()) walk(x, `${path}[${i}]`);
    } else if (v && typeof v === "object")
      for (const [k, x] of Object.entries(v)) {
        if (k === "logsPanel") continue;
        if (k === "filter" && typeof x === "string") out.push({ path: `${path}.${k}`, filter: x });
        else walk(x, `${path}.${k}`);
      }
  };
  walk(JSON.parse(dashboardJson), "$");
  return out;
}
