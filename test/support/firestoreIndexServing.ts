// Which Firestore index serves a query — the rules production applies and the emulator does not
// (the emulator needs no index at all, DESIGN.md §5). Pure functions: a query's normalized shape
// (shapeOfStructuredQuery, from the StructuredQuery the client sends), the indexes the Pulumi
// program declares (gcp.firestore.Index) and its single-field overrides (gcp.firestore.Field with
// indexConfig) go in; which index serves the query, or why none does, comes out.
//
// The rules, and where they come from (all read 2026-12-05, from stored copies of the pages):
//
// R1 Automatic single-field indexes. For every field that is neither an array nor a map, Firestore
//    (Standard edition) keeps two COLLECTION-scope single-field indexes, one ascending and one
//    descending; map subfields are indexed the same way, recursively; array fields get a
//    COLLECTION-scope array-contains index. "Single-field indexes with collection group scope are
//    not maintained by default." — "Standard edition index overview",
//    https://docs.cloud.google.com/firestore/docs/concepts/index-overview (the automatic-indexing
//    section read in the page's zh-CN rendering, ?hl=zh-cn; same page).
// R2 Exemptions. A single-field override replaces the inherited settings for that field; map
//    subfields inherit an override of their map (same page, "Single-field index exemptions"). With
//    Pulumi, gcp.firestore.Field `indexConfig`: "Creating an index configuration for this field will
//    override any inherited configuration with the indexes specified. Configuring the index
//    configuration with an empty block disables all indexes on the field"
//    (node_modules/@pulumi/gcp/firestore/field.d.ts, @pulumi/gcp 9.x; Admin API Field.index_config:
//    "If unset, field indexing will revert to the configuration defined by the ancestor_field").
//    A TTL policy alone (`ttlConfig`) does not exempt: "a single-field indexing exemption and a TTL
//    policy on the same field count as one field configuration" — two settings,
//    https://cloud.google.com/firestore/docs/ttl. So a Field with `indexConfig: {}` makes every
//    query that needs that field's automatic index fail in production.
// R3 A composite index has at least two fields; "The last field entry is always for the field path
//    __name__. If, on creation, __name__ was not specified as the last field, it will be added
//    automatically with the same direction as that of the last field defined. If the final field in
//    a composite index is not directional, the __name__ will be ordered ASCENDING" — Firestore
//    Admin v1 `Index.fields`
//    (https://cloud.google.com/dotnet/docs/reference/Google.Cloud.Firestore.Admin.V1/latest/Google.Cloud.Firestore.Admin.V1.Index,
//    and the same text on gcp.firestore.Index `fields` in node_modules/@pulumi/gcp/firestore/index_.d.ts).
//    COLLECTION-scope indexes serve queries on one collection, COLLECTION_GROUP-scope ones serve
//    collection-group queries (Admin v1 `Index.QueryScope`); neither serves the other.
// R4 A query's order: "By default, a query retrieves all documents that satisfy the query in
//    ascending order by document ID" (https://firebase.google.com/docs/firestore/query-data/order-limit-data).
//    Fields with a range/inequality filter that the query does not order by explicitly are ordered
//    implicitly, lexicographically, in the direction of the last explicit orderBy (ascending if
//    none), and __name__ comes last in that direction — the client library computes exactly this
//    for cursors (@google-cloud/firestore 8.7.1, build/src/reference/query.js, createImplicitOrderBy:
//    "The order of the implicit ordering always matches the last explicit order by"); Google's
//    Query Explain example shows a query with range filters on salary and experience and no orderBy
//    using "(experience ASC, salary ASC, __name__ ASC)"
//    (https://cloud.google.com/firestore/docs/query-data/multiple-range-optimize-indexes).
//    "the ORDER BY clause of a query determines which indexes can be used to serve the query. For
//    example, an ORDER BY a ASC, b ASC query requires a composite index on the a ASC, b ASC fields"
//    (https://firebase.google.com/docs/firestore/query-data/multiple-range-fields, "Indexing
//    considerations").
// R5 What the automatic indexes serve (Firebase's own Firestore reference, firebase/agent-skills
//    skills/firebase-firestore-standard/references/indexes.md, "Query Support Examples"): one
//    equality filter — automatic; a range filter and orderBy on one field — automatic; several
//    equality filters — automatic, by merging the single-field indexes; equality plus a range or
//    sort on another field — composite; ranges on two fields — composite; array-contains plus
//    equality — composite. An orderBy on a field other than __name__ and an equality filter on
//    another field therefore needs a composite, and a sort on two fields (R4) too.
// R6 count() and other aggregations: "Aggregation queries rely on the existing index configuration
//    that your queries already use" (https://cloud.google.com/firestore/docs/query-data/aggregation-queries):
//    an aggregation needs exactly the index of its query.
// R7 limit, offset, select (projection) and cursors (startAt/startAfter/endAt/endBefore) restrict or
//    position a scan along the query's order; they do not change the order, so not the index (the
//    cursor values are positions in the R4 order). limitToLast is sent as the reversed query
//    (query.js toProto), which is what the shape is taken from.
//
// Modelled conservatively (a query passes only when a documented rule serves it): an index serves a
// query when its fields, __name__ included (R3), are the query's equality/array-contains fields (in
// any order; equality fields with either direction, array-contains fields with CONTAINS) followed
// by the query's full order (R4) with the same directions. Merging is only modelled for automatic
// single-field indexes serving equality filters with no order but __name__ (R5; an array-contains
// filter merges with nothing, R5 says array-contains plus equality needs a composite); merging composite
// indexes that share an order suffix is not (it would at worst ask for a composite more). OR
// filters, vector search and kindless queries are reported as not modelled, never as served.

export type QueryScope = "COLLECTION" | "COLLECTION_GROUP";
export type Direction = "ASCENDING" | "DESCENDING";

export const documentName = "__name__";

export interface OrderField {
  field: string;
  direction: Direction;
}

/** A query as far as indexes are concerned. */
export interface QueryShape {
  /** Collection id queried ("" for a kindless query). */
  collection: string;
  scope: QueryScope;
  /** Fields with ==, in, IS NULL or IS NAN filters (sorted). */
  equality: string[];
  /** Fields with array-contains or array-contains-any filters (sorted). */
  arrayContains: string[];
  /** Fields with <, <=, >, >=, !=, not-in, IS NOT NULL or IS NOT NAN filters (sorted; __name__ excluded). */
  inequality: string[];
  /** The order the backend returns documents in: explicit orderBy, implicit inequality orders, then __name__. */
  order: OrderField[];
  /** Aggregations of an aggregation query (count, sum(x), avg(x)); empty for a plain query. */
  aggregations: string[];
  /** Parts that do not change the index: limit, offset, select, cursors. */
  modifiers: string[];
  /** Why the shape cannot be checked by these rules (OR filters, vector search, …); empty when it can. */
  unsupported: string[];
}

export interface DeclaredIndexField {
  fieldPath: string;
  order?: Direction;
  arrayConfig?: "CONTAINS";
}

/** A composite index as the program declares it (gcp.firestore.Index). */
export interface DeclaredIndex {
  collection: string;
  queryScope: QueryScope;
  fields: DeclaredIndexField[];
  /** Why it exists, or the resource that declares it. */
  purpose?: string;
}

/** A single-field index override (gcp.firestore.Field with indexConfig): exactly these indexes on the field. */
export interface SingleFieldOverride {
  collection: string;
  /** Field path, or "*" for every field of the collection group. */
  field: string;
  indexes: Array<{ queryScope?: QueryScope; order?: Direction; arrayConfig?: "CONTAINS" }>;
  /** The declaring resource, for messages. */
  source?: string;
}

export type ServedBy =
  | { kind: "builtin"; description: string }
  | { kind: "single-field"; description: string }
  | { kind: "merged-single-field"; description: string }
  | { kind: "composite"; description: string; index: DeclaredIndex };

export type Serving =
  | { served: true; by: ServedBy }
  | { served: false; reason: string; needs?: DeclaredIndex };

// --- shapes ------------------------------------------------------------------------------------

interface FieldReference {
  fieldPath?: string | null;
}
interface FilterProto {
  compositeFilter?: { op?: string | null; filters?: FilterProto[] | null } | null;
  fieldFilter?: { field?: FieldReference | null; op?: string | null } | null;
  unaryFilter?: { field?: FieldReference | null; op?: string | null } | null;
}
/** The parts of a google.firestore.v1.StructuredQuery this module reads (plain JSON, as the client sends it). */
export interface StructuredQueryProto {
  from?: Array<{ collectionId?: string | null; allDescendants?: boolean | null }> | null;
  where?: FilterProto | null;
  orderBy?: Array<{ field?: FieldReference | null; direction?: string | null }> | null;
  select?: { fields?: FieldReference[] | null } | null;
  startAt?: unknown;
  endAt?: unknown;
  offset?: number | null;
  limit?: unknown;
  findNearest?: unknown;
}
export interface AggregationProto {
  count?: unknown;
  sum?: { field?: FieldReference | null } | null;
  avg?: { field?: FieldReference | null } | null;
}

const equalityOps = new Set(["EQUAL", "IN", "IS_NULL", "IS_NAN"]);
const arrayOps = new Set(["ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY"]);
const inequalityOps = new Set([
  "LESS_THAN",
  "LESS_THAN_OR_EQUAL",
  "GREATER_THAN",
  "GREATER_THAN_OR_EQUAL",
  "NOT_EQUAL",
  "NOT_IN",
  "IS_NOT_NULL",
  "IS_NOT_NAN",
]);

const direction = (d: string | null | undefined): Direction =>
  d === "DESCENDING" || d === "desc" ? "DESCENDING" : "ASCENDING";

/** Lexicographic order of field paths, segment by segment (the client's FieldPath.compareTo). */
function compareFieldPaths(a: string, b: string): number {
  const as = a.split(".");
  const bs = b.split(".");
  for (let i = 0; i < Math.min(as.length, bs.length); i++) {
    if (as[i]! < bs[i]!) return -1;
    if (as[i]! > bs[i]!) return 1;
  }
  return as.length - bs.length;
}

/** The normalized shape of a StructuredQuery (and of its aggregations, for an aggregation query). */
export function shapeOfStructuredQuery(
  query: StructuredQueryProto,
  aggregations: AggregationProto[] = [],
): QueryShape {
  const unsupported: string[] = [];
  const from = query.from ?? [];
  if (from.length !== 1) unsupported.push(`a query over ${from.length} collection selectors`);
  const selector = from[0] ?? {};
  const collection = selector.collectionId ?? "";
  if (!collection) unsupported.push("a kindless query (no collection id)");
  const scope: QueryScope = selector.allDescendants ? "COLLECTION_GROUP" : "COLLECTION";

  const equality = new Set<string>();
  const arrayContains = new Set<string>();
  const inequality = new Set<string>();
  const visit = (f: FilterProto | null | undefined) => {
    if (!f) return;
    if (f.compositeFilter) {
      if (f.compositeFilter.op !== "AND")
        unsupported.push(`a ${f.compositeFilter.op ?? "?"} filter (each disjunct needs its own index)`);
      for (const sub of f.compositeFilter.filters ?? []) visit(sub);
      return;
    }
    const leaf = f.fieldFilter ?? f.unaryFilter;
    const field = leaf?.field?.fieldPath ?? "";
    const op = leaf?.op ?? "";
    // Filters on the document name ride on __name__, the last key of every index (R3).
    if (field === documentName) return;
    if (equalityOps.has(op)) equality.add(field);
    else if (arrayOps.has(op)) arrayContains.add(field);
    else if (inequalityOps.has(op)) inequality.add(field);
    else unsupported.push(`a filter with operator ${op || "?"} on ${field}`);
  };
  visit(query.where);

  const order: OrderField[] = (query.orderBy ?? []).map((o) => ({
    field: o.field?.fieldPath ?? "",
    direction: direction(o.direction),
  }));
  const ordered = new Set(order.map((o) => o.field));
  const last: Direction = order.length > 0 ? order[order.length - 1]!.direction : "ASCENDING";
  for (const field of [...inequality].sort(compareFieldPaths))
    if (!ordered.has(field)) {
      order.push({ field, direction: last });
      ordered.add(field);
    }
  if (!ordered.has(documentName)) order.push({ field: documentName, direction: last });

  const modifiers: string[] = [];
  if (query.limit !== undefined && query.limit !== null) modifiers.push("limit");
  if (query.offset) modifiers.push("offset");
  if (query.select) modifiers.push("select");
  if (query.startAt) modifiers.push("startAt/startAfter");
  if (query.endAt) modifiers.push("endAt/endBefore");
  if (query.findNearest) unsupported.push("a vector search (findNearest needs a vector index)");

  const aggs = aggregations.map((a) =>
    a.sum ? `sum(${a.sum.field?.fieldPath})` : a.avg ? `avg(${a.avg.field?.fieldPath})` : "count",
  );
  return {
    collection,
    scope,
    equality: [...equality].sort(compareFieldPaths),
    arrayContains: [...arrayContains].sort(compareFieldPaths),
    inequality: [...inequality].sort(compareFieldPaths),
    order,
    aggregations: aggs,
    modifiers,
    unsupported,
  };
}

const dir = (d: Direction) => (d === "ASCENDING" ? "asc" : "desc");

/** One line a reader can match to the code: `items (collection group) where status ==, leaseUntil range order by leaseUntil asc, __name__ asc`. */
export function describeShape(s: QueryShape): string {
  const where = [
    ...s.equality.map((f) => `${f} ==`),
    ...s.arrayContains.map((f) => `${f} array-contains`),
    ...s.inequality.map((f) => `${f} range`),
  ];
  const parts = [`${s.collection}${s.scope === "COLLECTION_GROUP" ? " (collection group)" : ""}`];
  if (where.length > 0) parts.push(`where ${where.join(", ")}`);
  parts.push(`order by ${s.order.map((o) => `${o.field} ${dir(o.direction)}`).join(", ")}`);
  if (s.aggregations.length > 0) parts.push(`[${s.aggregations.join(", ")}]`);
  if (s.unsupported.length > 0) parts.push(`(not modelled: ${s.unsupported.join("; ")})`);
  return parts.join(" ");
}

/** Two shapes with the same key need the same index (modifiers aside). */
export function shapeKey(s: QueryShape): string {
  return describeShape(s);
}

export function describeIndex(i: DeclaredIndex): string {
  const fields = i.fields.map((f) =>
    f.arrayConfig ? `${f.fieldPath} contains` : `${f.fieldPath} ${dir(f.order!)}`,
  );
  return `${i.collection}${i.queryScope === "COLLECTION_GROUP" ? " (collection group)" : ""} [${fields.join(", ")}]`;
}

// --- indexes -----------------------------------------------------------------------------------

interface Entry {
  field: string;
  /** An ordered mode, or CONTAINS. */
  mode: Direction | "CONTAINS";
}

/** The index's entries with the implicit trailing __name__ (R3). */
function effectiveFields(index: DeclaredIndex): Entry[] {
  const entries: Entry[] = index.fields.map((f) => ({
    field: f.fieldPath,
    mode: f.arrayConfig ? "CONTAINS" : (f.order ?? "ASCENDING"),
  }));
  const last = entries[entries.length - 1];
  if (last && last.field !== documentName)
    entries.push({ field: documentName, mode: last.mode === "CONTAINS" ? "ASCENDING" : last.mode });
  return entries;
}

/** Problems Firestore would refuse, or indexes that can never serve a query (R3). */
export function validateIndexDefinitions(indexes: DeclaredIndex[]): string[] {
  const problems: string[] = [];
  const seen = new Map<string, DeclaredIndex>();
  for (const index of indexes) {
    const name = describeIndex(index);
    if (!index.collection || index.collection.includes("/"))
      problems.push(`${name}: the collection must be a collection id, not a path`);
    if (index.queryScope !== "COLLECTION" && index.queryScope !== "COLLECTION_GROUP")
      problems.push(`${name}: queryScope ${String(index.queryScope)} is not COLLECTION or COLLECTION_GROUP`);
    if (index.fields.length < 2)
      problems.push(
        `${name}: a composite index needs at least two fields (one field is a single-field index)`,
      );
    const paths = new Set<string>();
    index.fields.forEach((f, i) => {
      if (!!f.order === !!f.arrayConfig)
        problems.push(`${name}: field ${f.fieldPath} needs exactly one of order and arrayConfig`);
      if (paths.has(f.fieldPath)) problems.push(`${name}: field ${f.fieldPath} appears twice`);
      paths.add(f.fieldPath);
      if (f.fieldPath === documentName && i !== index.fields.length - 1)
        problems.push(`${name}: ${documentName} can only be the last field`);
    });
    if (index.fields.filter((f) => f.arrayConfig).length > 1)
      problems.push(
        `${name}: more than one array-contains field (a query has at most one array-contains filter)`,
      );
    const effective = effectiveFields(index);
    if (
      index.fields.length === 2 &&
      effective.length === 2 &&
      effective[0]!.mode === effective[1]!.mode &&
      effective[0]!.mode !== "CONTAINS"
    )
      problems.push(`${name}: the same as the automatic single-field index on ${effective[0]!.field}`);
    const key = `${index.collection}|${index.queryScope}|${JSON.stringify(effective)}`;
    const twin = seen.get(key);
    if (twin) problems.push(`${name}: declared twice (with the same fields and implicit ${documentName})`);
    seen.set(key, index);
  }
  return problems;
}

/** The single-field index modes a field has in a scope, after overrides (R1, R2). */
export function singleFieldModes(
  collection: string,
  field: string,
  scope: QueryScope,
  overrides: SingleFieldOverride[],
): { modes: Array<Direction | "CONTAINS">; override?: SingleFieldOverride } {
  const segments = field.split(".");
  const candidates = segments.map((_, i) => segments.slice(0, segments.length - i).join("."));
  candidates.push("*");
  for (const candidate of candidates) {
    const override = overrides.find((o) => o.collection === collection && o.field === candidate);
    if (override) {
      const modes = override.indexes
        .filter((i) => (i.queryScope ?? "COLLECTION") === scope)
        .map((i) => (i.arrayConfig ? ("CONTAINS" as const) : (i.order ?? "ASCENDING")));
      return { modes, override };
    }
  }
  return { modes: scope === "COLLECTION" ? ["ASCENDING", "DESCENDING", "CONTAINS"] : [] };
}

const sameOrder = (a: Entry[], b: OrderField[]) =>
  a.length === b.length && a.every((e, i) => e.field === b[i]!.field && e.mode === b[i]!.direction);

/** Does this composite serve the shape on its own: equality/array fields first, then exactly the order? */
function compositeServes(index: DeclaredIndex, shape: QueryShape): boolean {
  if (index.collection !== shape.collection || index.queryScope !== shape.scope) return false;
  const entries = effectiveFields(index);
  const prefixLength = shape.equality.length + shape.arrayContains.length;
  if (entries.length !== prefixLength + shape.order.length) return false;
  const prefix = entries.slice(0, prefixLength);
  const eq = new Set(shape.equality);
  const arr = new Set(shape.arrayContains);
  for (const e of prefix) {
    if (eq.has(e.field) && e.mode !== "CONTAINS") eq.delete(e.field);
    else if (arr.has(e.field) && e.mode === "CONTAINS") arr.delete(e.field);
    else return false;
  }
  return eq.size === 0 && arr.size === 0 && sameOrder(entries.slice(prefixLength), shape.order);
}

const scopeName = (s: QueryScope) => (s === "COLLECTION" ? "collection" : "collection-group");

/** Why the automatic single-field index `mode` on `field` is missing, or undefined when it exists. */
function missingSingleField(
  shape: QueryShape,
  field: string,
  mode: Direction | "CONTAINS",
  overrides: SingleFieldOverride[],
): string | undefined {
  const { modes, override } = singleFieldModes(shape.collection, field, shape.scope, overrides);
  if (modes.includes(mode)) return undefined;
  const what = `the ${scopeName(shape.scope)}-scope ${mode.toLowerCase()} single-field index on ${shape.collection}.${field}`;
  if (override)
    return `${what} is disabled by a single-field override (${override.source ?? `field ${override.field}`}: indexes ${JSON.stringify(override.indexes)})`;
  return `${what} is not automatic (Firestore keeps only collection-scope single-field indexes by default)`;
}

/**
 * Which index serves the query: a declared composite, an automatic single-field index, several of
 * those merged (equality only), or the built-in document-name index — or why none does, with the
 * composite index that would.
 */
export function indexServing(
  shape: QueryShape,
  declared: DeclaredIndex[],
  overrides: SingleFieldOverride[] = [],
): Serving {
  if (shape.unsupported.length > 0)
    return { served: false, reason: `cannot be checked: ${shape.unsupported.join("; ")}` };

  const composite = declared.find((i) => compositeServes(i, shape));
  if (composite)
    return {
      served: true,
      by: { kind: "composite", description: `composite ${describeIndex(composite)}`, index: composite },
    };

  const order = shape.order;
  const nameOnly = order.length === 1 && order[0]!.field === documentName;
  const filtered = shape.equality.length + shape.arrayContains.length;
  const missing: string[] = [];

  if (filtered === 0 && nameOnly)
    return { served: true, by: { kind: "builtin", description: `built-in ${documentName} index` } };

  if (filtered === 0 && order.length === 2 && order[1]!.direction === order[0]!.direction) {
    // One field ordered (and range-filtered), then __name__ the same way: an automatic index (R1, R5).
    const { field, direction: d } = order[0]!;
    const why = missingSingleField(shape, field, d, overrides);
    if (!why)
      return {
        served: true,
        by: { kind: "single-field", description: `automatic single-field ${field} ${dir(d)}` },
      };
    missing.push(why);
  }

  if (filtered > 0 && nameOnly) {
    // Equality filters only: one automatic index each, merged on __name__; one array-contains filter
    // alone: the automatic array-contains index; array-contains with anything else: a composite (R5).
    const d = order[0]!.direction;
    const arrayWithOthers = shape.arrayContains.length > 0 && filtered > 1;
    const whys = [
      ...shape.equality.map((f) => missingSingleField(shape, f, d, overrides)),
      ...shape.arrayContains.map((f) =>
        d === "DESCENDING"
          ? `array-contains on ${f} with ${documentName} descending needs a composite`
          : missingSingleField(shape, f, "CONTAINS", overrides),
      ),
      arrayWithOthers ? "array-contains with another filter needs a composite" : undefined,
    ].filter((w): w is string => w !== undefined);
    if (whys.length === 0) {
      const used = [
        ...shape.equality.map((f) => `${f} ${dir(d)}`),
        ...shape.arrayContains.map((f) => `${f} contains`),
      ];
      return {
        served: true,
        by:
          used.length === 1
            ? { kind: "single-field", description: `automatic single-field ${used[0]}` }
            : {
                kind: "merged-single-field",
                description: `automatic single-field ${used.join(" + ")}, merged`,
              },
      };
    }
    missing.push(...whys);
  }

  // The composite that would serve it: equality fields, array-contains field, then the order,
  // leaving out __name__ when it follows the last field's direction (R3).
  const fields: DeclaredIndexField[] = [
    ...shape.equality.map((fieldPath) => ({ fieldPath, order: "ASCENDING" as const })),
    ...shape.arrayContains.map((fieldPath) => ({ fieldPath, arrayConfig: "CONTAINS" as const })),
    ...order.map((o) => ({ fieldPath: o.field, order: o.direction })),
  ];
  const beforeName = fields[fields.length - 2];
  const name = fields[fields.length - 1]!;
  if (beforeName && (beforeName.order ?? "ASCENDING") === name.order) fields.pop();
  const needs: DeclaredIndex = { collection: shape.collection, queryScope: shape.scope, fields };
  const reason =
    `no declared index serves ${describeShape(shape)}` +
    (missing.length > 0 ? `; ${missing.join("; ")}` : "") +
    (fields.length >= 2 ? `; it needs the composite ${describeIndex(needs)}` : "");
  return { served: false, reason, needs: fields.length >= 2 ? needs : undefined };
}

// --- what the Pulumi program declares ------------------------------------------------------------

/** A registered resource as the mock monitor records it (test/infra/support/pulumiMocks.ts). */
export interface RegisteredResource {
  type: string;
  name: string;
  props: Record<string, unknown>;
}

export const indexResourceType = "gcp:firestore/index:Index";
export const fieldResourceType = "gcp:firestore/field:Field";

/** The composite indexes (gcp.firestore.Index) and single-field overrides (gcp.firestore.Field indexConfig) a program registered. */
export function declaredByProgram(resources: RegisteredResource[]): {
  indexes: DeclaredIndex[];
  overrides: SingleFieldOverride[];
} {
  const indexes = resources
    .filter((r) => r.type === indexResourceType)
    .map((r) => ({
      collection: String(r.props.collection),
      queryScope: (r.props.queryScope ?? "COLLECTION") as QueryScope,
      fields: (r.props.fields as DeclaredIndexField[]).map((f) => ({
        fieldPath: f.fieldPath,
        ...(f.order ? { order: f.order } : {}),
        ...(f.arrayConfig ? { arrayConfig: f.arrayConfig } : {}),
      })),
      purpose: r.name,
    }));
  const overrides = resources
    .filter(
      (r) =>
        r.type === fieldResourceType && r.props.indexConfig !== undefined && r.props.indexConfig !== null,
    )
    .map((r) => ({
      collection: String(r.props.collection),
      field: String(r.props.field),
      indexes: ((r.props.indexConfig as { indexes?: SingleFieldOverride["indexes"] }).indexes ?? []).map(
        (i) => ({
          queryScope: i.queryScope ?? "COLLECTION",
          ...(i.order ? { order: i.order } : {}),
          ...(i.arrayConfig ? { arrayConfig: i.arrayConfig } : {}),
        }),
      ),
      source: `gcp.firestore.Field ${r.name}`,
    }));
  return { indexes, overrides };
}
