// Records the shape of every query a Firestore client sends, and which function of the watched
// source files built or ran it — at the client library's layer, so the adapter under test is not
// touched. Pair it with firestoreIndexServing.ts to check each shape against the indexes the
// program declares (the emulator needs none, production needs them all: DESIGN.md §5).
//
// How: while installed, every query-building call (where, orderBy, limit, count, …) and every
// execution (get, stream, explain, onSnapshot, Transaction.get) tags the query object with the
// innermost watched function on the call stack; toProto() hands the tags to the request it builds;
// and the client's requestStream/request — the one door every runQuery and runAggregationQuery RPC
// goes through, inside transactions and retries included — records the shape of the request
// actually sent with those tags. Nothing reaches the server without being recorded.
//
// querySites() reads a source file (TypeScript AST) for the functions that build queries, so a test
// can fail when one of them was never exercised.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Firestore, Query, Transaction } from "@google-cloud/firestore";
import ts from "typescript";
import {
  type AggregationProto,
  type QueryShape,
  type StructuredQueryProto,
  shapeOfStructuredQuery,
} from "./firestoreIndexServing";

export interface RecordedQuery {
  /** The RPC that carried it: runQuery or runAggregationQuery (anything else is recorded as not modelled). */
  rpc: string;
  shape: QueryShape;
  /** Watched functions that built or ran the query, e.g. "FirestoreLedger.listBatches". */
  sites: string[];
  inTransaction: boolean;
}

export interface QueryShapeRecorder {
  readonly queries: RecordedQuery[];
  /** Puts the client library back as it was. */
  restore(): void;
}

// biome-ignore lint/suspicious/noExplicitAny: patching the client's prototypes (public and internal methods).
type AnyFn = (this: any, ...args: any[]) => any;
type Proto = Record<string, AnyFn>;

interface QueryRequest {
  structuredQuery?: StructuredQueryProto;
  structuredAggregationQuery?: { structuredQuery?: StructuredQueryProto; aggregations?: AggregationProto[] };
  transaction?: unknown;
  newTransaction?: unknown;
}

const queryRpcs = new Set(["runQuery", "runAggregationQuery"]);
const otherQueryRpcs = new Set(["partitionQuery", "executePipeline", "listen"]);

/** Query-building methods: each returns a new query that keeps the sites of the one it came from. */
const builders = [
  "where",
  "orderBy",
  "limit",
  "limitToLast",
  "offset",
  "select",
  "startAt",
  "startAfter",
  "endAt",
  "endBefore",
  "withConverter",
  "count",
  "aggregate",
  "findNearest",
];
const requiredBuilders = new Set(["where", "orderBy", "limit", "select", "startAfter", "count"]);
/** Methods that send a query (tagged with the caller before they do). */
const executors = ["get", "stream", "explain", "explainStream", "onSnapshot"];

let installed = false;

/** The prototypes of the client's query classes (AggregateQuery and VectorQuery are not exported). */
function queryPrototypes(): {
  query: Proto;
  aggregate: Proto;
  vector: Proto;
  firestore: Proto;
  transaction: Proto;
} {
  const probe = new Firestore({ projectId: "query-shape-probe" });
  const collection = probe.collection("probe");
  const aggregate = Object.getPrototypeOf(collection.count()) as Proto;
  const vector = Object.getPrototypeOf(
    collection.findNearest({ vectorField: "v", queryVector: [1], limit: 1, distanceMeasure: "EUCLIDEAN" }),
  ) as Proto;
  return {
    query: Query.prototype as unknown as Proto,
    aggregate,
    vector,
    firestore: Firestore.prototype as unknown as Proto,
    transaction: Transaction.prototype as unknown as Proto,
  };
}

const framePattern = /^\s*at (?:async )?(?:(.+?) \()?(?:file:\/\/)?(\/[^():]+):(\d+):(\d+)\)?$/;

export function recordQueryShapes(opts: {
  /** Source files whose functions count as sites. */
  sources: string[];
  /** When given, only these function names count as sites (the innermost one on the stack wins). */
  owners?: ReadonlySet<string>;
}): QueryShapeRecorder {
  if (installed) throw new Error("a query shape recorder is already installed");
  const sources = new Set(opts.sources.map((s) => resolve(s)));
  const queries: RecordedQuery[] = [];
  const tags = new WeakMap<object, Set<string>>();
  const requestSites = new WeakMap<object, Set<string>>();
  const restores: Array<() => void> = [];

  const siteOnStack = (): string | undefined => {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 100;
    const stack = new Error().stack ?? "";
    Error.stackTraceLimit = limit;
    for (const line of stack.split("\n")) {
      const m = framePattern.exec(line);
      if (!m || !sources.has(m[2]!)) continue;
      const name = m[1]?.replace(/^new /, "");
      if (!name || name === "<anonymous>") continue;
      if (!opts.owners || opts.owners.has(name)) return name;
    }
    return undefined;
  };
  const tag = (target: unknown, inherited?: Set<string>) => {
    if (!target || typeof target !== "object") return;
    const sites = new Set([...(tags.get(target) ?? []), ...(inherited ?? [])]);
    const here = siteOnStack();
    if (here) sites.add(here);
    tags.set(target, sites);
  };
  const patch = (proto: Proto, name: string, wrap: (original: AnyFn) => AnyFn, required: boolean) => {
    const original = proto[name];
    if (typeof original !== "function") {
      if (required)
        throw new Error(
          `@google-cloud/firestore changed: ${name} is gone; test/support/firestoreQueryShapes.ts needs updating`,
        );
      return;
    }
    proto[name] = wrap(original);
    restores.push(() => {
      proto[name] = original;
    });
  };

  const record = (rpc: string, request: QueryRequest | undefined) => {
    const aggregation = request?.structuredAggregationQuery;
    const structured = aggregation?.structuredQuery ?? request?.structuredQuery;
    const shape = structured
      ? shapeOfStructuredQuery(structured, aggregation?.aggregations ?? [])
      : shapeOfStructuredQuery({}, []);
    if (!queryRpcs.has(rpc)) shape.unsupported.push(`a ${rpc} RPC`);
    queries.push({
      rpc,
      shape,
      sites: [...(request ? (requestSites.get(request) ?? []) : [])],
      inTransaction: !!(request?.transaction || request?.newTransaction),
    });
  };

  try {
    const p = queryPrototypes();
    for (const proto of [p.query, p.aggregate, p.vector])
      for (const name of builders)
        patch(
          proto,
          name,
          (original) =>
            function (...args) {
              const result = original.apply(this, args);
              tag(result, tags.get(this));
              return result;
            },
          proto === p.query && requiredBuilders.has(name),
        );
    for (const proto of [p.query, p.aggregate, p.vector])
      for (const name of executors)
        patch(
          proto,
          name,
          (original) =>
            function (...args) {
              tag(this);
              return original.apply(this, args);
            },
          proto !== p.vector && (name === "get" || (proto === p.query && name === "stream")),
        );
    patch(
      p.transaction,
      "get",
      (original) =>
        function (refOrQuery, ...rest) {
          tag(refOrQuery);
          return original.call(this, refOrQuery, ...rest);
        },
      true,
    );
    patch(
      p.firestore,
      "collectionGroup",
      (original) =>
        function (...args) {
          const result = original.apply(this, args);
          tag(result);
          return result;
        },
      true,
    );
    for (const proto of [p.query, p.aggregate, p.vector])
      patch(
        proto,
        "toProto",
        (original) =>
          function (...args) {
            const request = original.apply(this, args);
            if (request && typeof request === "object") {
              const sites = new Set([...(requestSites.get(request) ?? []), ...(tags.get(this) ?? [])]);
              requestSites.set(request, sites);
            }
            return request;
          },
        true,
      );
    patch(
      p.firestore,
      "requestStream",
      (original) =>
        function (methodName: string, bidirectional: boolean, request: QueryRequest, ...rest) {
          if (queryRpcs.has(methodName) || otherQueryRpcs.has(methodName)) record(methodName, request);
          return original.call(this, methodName, bidirectional, request, ...rest);
        },
      true,
    );
    patch(
      p.firestore,
      "request",
      (original) =>
        function (methodName: string, request: QueryRequest, ...rest) {
          if (queryRpcs.has(methodName) || otherQueryRpcs.has(methodName)) record(methodName, request);
          return original.call(this, methodName, request, ...rest);
        },
      true,
    );
  } catch (err) {
    for (const r of restores.reverse()) r();
    throw err;
  }
  installed = true;
  return {
    queries,
    restore() {
      for (const r of restores.reverse()) r();
      restores.length = 0;
      installed = false;
    },
  };
}

/** The shape of a query or aggregation query as the client would send it (no network). */
export function shapeOfQuery(query: unknown): QueryShape {
  const request = (query as { toProto(): QueryRequest }).toProto();
  const aggregation = request.structuredAggregationQuery;
  return shapeOfStructuredQuery(
    aggregation?.structuredQuery ?? request.structuredQuery ?? {},
    aggregation?.aggregations ?? [],
  );
}

// --- query sites in the source ---------------------------------------------------------------------

export interface QuerySite {
  /** The function the site belongs to, named as V8 names it on a stack: "Class.method" or "function". */
  owner: string;
  /** Query-building calls in it, e.g. ["where@236", "orderBy@238"] (method@line). */
  calls: string[];
  /** where/orderBy calls made only on some paths (inside an if, ?:, && or ||): each doubles the shapes. */
  conditionalShapeCalls: number;
}

const siteCalls = new Set([...builders, "collectionGroup"]);
const shapeChanging = new Set(["where", "orderBy", "collectionGroup", "findNearest"]);

/**
 * The functions of a source file that build Firestore queries. A call belongs to the innermost
 * method, function declaration or top-level function variable around it (inner arrows belong to
 * their enclosing method, as on a stack the method's frame is the first named one the recorder
 * accepts).
 */
export function querySites(file: string): QuerySite[] {
  const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
  const sites = new Map<string, QuerySite>();
  const ownerOf = (node: ts.Node): { owner: string; conditional: boolean } | undefined => {
    let conditional = false;
    let child: ts.Node = node;
    for (let n: ts.Node | undefined = node.parent; n; child = n, n = n.parent) {
      if (ts.isIfStatement(n) && child !== n.expression) conditional = true;
      if (ts.isConditionalExpression(n) && child !== n.condition) conditional = true;
      if (
        ts.isBinaryExpression(n) &&
        child === n.right &&
        [
          ts.SyntaxKind.AmpersandAmpersandToken,
          ts.SyntaxKind.BarBarToken,
          ts.SyntaxKind.QuestionQuestionToken,
        ].includes(n.operatorToken.kind)
      )
        conditional = true;
      if (
        (ts.isMethodDeclaration(n) || ts.isGetAccessorDeclaration(n) || ts.isSetAccessorDeclaration(n)) &&
        ts.isClassLike(n.parent)
      ) {
        const cls = n.parent.name?.text ?? "<anonymous class>";
        return { owner: `${cls}.${n.name.getText(source)}`, conditional };
      }
      if (ts.isConstructorDeclaration(n) && ts.isClassLike(n.parent))
        return { owner: n.parent.name?.text ?? "<anonymous class>", conditional };
      if (ts.isFunctionDeclaration(n) && n.name) return { owner: n.name.text, conditional };
      if (
        (ts.isArrowFunction(n) || ts.isFunctionExpression(n)) &&
        ts.isVariableDeclaration(n.parent) &&
        ts.isIdentifier(n.parent.name) &&
        n.parent.parent?.parent?.parent !== undefined &&
        ts.isSourceFile(n.parent.parent.parent.parent)
      )
        return { owner: n.parent.name.text, conditional };
    }
    return undefined;
  };
  const visit = (node: ts.Node) => {
    if (
      ts.isCallExpression(node) &&
      ts.isPropertyAccessExpression(node.expression) &&
      siteCalls.has(node.expression.name.text)
    ) {
      const method = node.expression.name.text;
      const found = ownerOf(node);
      const owner = found?.owner ?? "<module>";
      const site = sites.get(owner) ?? { owner, calls: [], conditionalShapeCalls: 0 };
      const line = source.getLineAndCharacterOfPosition(node.expression.name.getStart(source)).line + 1;
      site.calls.push(`${method}@${line}`);
      if (found?.conditional && shapeChanging.has(method)) site.conditionalShapeCalls++;
      sites.set(owner, site);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return [...sites.values()];
}
