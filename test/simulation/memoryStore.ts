// An in-memory document store with Firestore's semantics for exactly the primitives the ledger uses
// (functions/adapters/firestoreLedger.ts), so the simulator (test/simulation/) runs the ledger's
// decisions against a faithful model, and the ledger contract suite (test/ledgerContract/) holds the
// model to the emulator's behaviour.
//
// Modelled, as Firestore documents them (google/firestore/v1/firestore.proto, write.proto, query.proto):
// - Documents at slash paths (`batches/b1`, `batches/b1/items/i1`) with a create time and an update
//   time from one logical clock (each commit is one tick).
// - Point reads return the data and the update time; a missing document reads as not existing.
// - Writes: create (ALREADY_EXISTS, code 6, when the document exists), set, update (NOT_FOUND, code 5,
//   when it does not; field paths set nested fields and replace the value at the path), delete.
//   Any write may carry an update-time precondition: FAILED_PRECONDITION (code 9) when the stored
//   update time differs (or the document is missing).
// - A commit of several writes is atomic: all land, or — at the first failing precondition — none.
// - WriteResult.update_time: "If the write did not actually change the document, this will be the
//   previous update_time." A write whose result equals the stored data keeps the update time. The
//   batch fence (functions/core/batchFence.ts) depends on exactly this.
// - Transactions: reads are recorded with their update times and writes buffered; the commit fails
//   with ABORTED (code 10) when any document read has changed since (or appeared, or vanished), and
//   the transaction function is run again, up to maxAttempts. This is optimistic where Firestore's
//   server client locks pessimistically; both serialize transactions on the documents they read.
// - Batched writes (the BulkWriter): each write applies, or fails, on its own.
// - Queries are strongly consistent: equality, range, `in` and `array-contains` filters, orderBy
//   (documents without the ordered field are left out; ties ordered by document name in the last
//   order's direction; `__name__` orders by document path), startAfter on a prefix of the order,
//   limit, count(). Range filters match
//   values of the same type only, and a filter never matches a document without the field.
//
// The store is synchronous; `StoreClient` is the asynchronous view a ledger uses, and awaits a gate
// before each primitive reaches the store — the simulator's scheduler decides the order in which
// concurrent round trips land.

export const StatusCode = { NOT_FOUND: 5, ALREADY_EXISTS: 6, FAILED_PRECONDITION: 9, ABORTED: 10 } as const;

/** Carries `code` like the Firestore client's errors (gRPC status codes). */
export class StoreError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = "StoreError";
  }
}

export type DocData = Readonly<Record<string, unknown>>;

export interface Snapshot {
  path: string;
  id: string;
  exists: boolean;
  data: DocData | undefined;
  createTime: number | null;
  updateTime: number | null;
}

/** A field path: segments, e.g. ["error", "kind"]. Strings given to helpers split on dots. */
export type FieldSegments = readonly string[];

export type Write =
  | { op: "create"; path: string; data: Record<string, unknown> }
  | { op: "set"; path: string; data: Record<string, unknown> }
  | {
      op: "update";
      path: string;
      fields: ReadonlyArray<readonly [FieldSegments, unknown]>;
      lastUpdateTime?: number;
    }
  | { op: "delete"; path: string; lastUpdateTime?: number };

export interface CommitResult {
  commitTime: number;
  /** Per write: the document's update time after the commit (the previous one when unchanged). */
  updateTimes: Array<number | null>;
}

export type FilterOp = "==" | "<" | "<=" | ">" | ">=" | "in" | "array-contains";

export interface QuerySpec {
  /** The collection id (`items`), under `parent` (a document path) or at the root. */
  collection: string;
  parent?: string;
  /** Every collection with this id, at any depth (a collection-group query). */
  group?: boolean;
  where?: ReadonlyArray<readonly [string, FilterOp, unknown]>;
  orderBy?: ReadonlyArray<readonly [string, "asc" | "desc"]>;
  startAfter?: readonly unknown[];
  limit?: number;
}

export interface CommitEvent {
  time: number;
  changes: Array<{ path: string; before: DocData | undefined; after: DocData | undefined }>;
}

interface StoredDoc {
  data: DocData;
  createTime: number;
  updateTime: number;
}

/** Splits a dotted field path (as Firestore's `where("error.kind", ...)`). */
export function fieldPath(path: string): FieldSegments {
  return path.split(".");
}

/** Update fields from an object whose keys are dotted field paths (as Firestore's `update(data)`). */
export function fieldsOf(patch: Record<string, unknown>): Array<readonly [FieldSegments, unknown]> {
  const out: Array<readonly [FieldSegments, unknown]> = [];
  for (const [k, v] of Object.entries(patch)) if (v !== undefined) out.push([fieldPath(k), v]);
  return out;
}

export class MemoryStore {
  private readonly docs = new Map<string, StoredDoc>();
  private clock = 0;
  private readonly listeners: Array<(e: CommitEvent) => void> = [];
  /** Commits applied (for tests and the simulator's statistics). */
  commits = 0;

  /** The logical time of the last commit. */
  get time(): number {
    return this.clock;
  }

  /** Called synchronously after every commit that changed anything (the simulator's invariant checker). */
  onCommit(listener: (e: CommitEvent) => void): void {
    this.listeners.push(listener);
  }

  // --- reads -----------------------------------------------------------------------------------
  get(path: string): Snapshot {
    const d = this.docs.get(path);
    return {
      path,
      id: lastSegment(path),
      exists: !!d,
      data: d?.data,
      createTime: d?.createTime ?? null,
      updateTime: d?.updateTime ?? null,
    };
  }

  /** Every stored document (the checker's view; not a Firestore primitive). */
  *entries(): IterableIterator<[string, DocData]> {
    for (const [path, d] of this.docs) yield [path, d.data];
  }

  // --- writes ----------------------------------------------------------------------------------
  /** Atomic: every write lands, or none (the first failing precondition fails the commit). */
  commit(writes: readonly Write[], reads?: ReadonlyMap<string, number | null>): CommitResult {
    if (reads) {
      for (const [path, seen] of reads) {
        const now = this.docs.get(path)?.updateTime ?? null;
        if (now !== seen)
          throw new StoreError(
            StatusCode.ABORTED,
            `transaction aborted: ${path} changed since it was read (contention)`,
          );
      }
    }
    const staged = new Map<string, StoredDoc | undefined>();
    const current = (path: string) => (staged.has(path) ? staged.get(path) : this.docs.get(path));
    const time = this.clock + 1;
    const results: Array<{ path: string }> = [];
    for (const w of writes) {
      const cur = current(w.path);
      switch (w.op) {
        case "create":
          if (cur) throw new StoreError(StatusCode.ALREADY_EXISTS, `document already exists: ${w.path}`);
          staged.set(w.path, { data: frozenCopy(w.data) as DocData, createTime: time, updateTime: time });
          break;
        case "set": {
          const data = frozenCopy(w.data) as DocData;
          if (cur && deepEqual(cur.data, data)) staged.set(w.path, cur);
          else staged.set(w.path, { data, createTime: cur?.createTime ?? time, updateTime: time });
          break;
        }
        case "update": {
          checkPrecondition(w.path, cur, w.lastUpdateTime);
          if (!cur) throw new StoreError(StatusCode.NOT_FOUND, `no document to update: ${w.path}`);
          const data = applyFields(cur.data, w.fields);
          if (deepEqual(cur.data, data)) staged.set(w.path, cur);
          else staged.set(w.path, { data, createTime: cur.createTime, updateTime: time });
          break;
        }
        case "delete":
          checkPrecondition(w.path, cur, w.lastUpdateTime);
          staged.set(w.path, undefined);
          break;
      }
      results.push({ path: w.path });
    }
    const changes: CommitEvent["changes"] = [];
    for (const [path, doc] of staged) {
      const before = this.docs.get(path);
      if (before === doc) continue;
      if (doc) this.docs.set(path, doc);
      else this.docs.delete(path);
      changes.push({ path, before: before?.data, after: doc?.data });
    }
    if (changes.length > 0) this.clock = time;
    this.commits++;
    const updateTimes = results.map((r) => this.docs.get(r.path)?.updateTime ?? null);
    if (changes.length > 0) {
      const event = { time, changes };
      for (const l of this.listeners) l(event);
    }
    return { commitTime: time, updateTimes };
  }

  // --- queries ---------------------------------------------------------------------------------
  query(q: QuerySpec): Snapshot[] {
    const filters = (q.where ?? []).map(([f, op, v]) => ({ path: fieldPath(f), op, value: v }));
    const orders = (q.orderBy ?? []).map(([f, dir]) => ({ path: fieldPath(f), dir }));
    // Firestore orders by the inequality field first when no order is given.
    const inequality = filters.find((f) => f.op === "<" || f.op === "<=" || f.op === ">" || f.op === ">=");
    if (inequality && orders.length === 0) orders.push({ path: inequality.path, dir: "asc" });
    const parentPath = q.parent ? `${q.parent}/${q.collection}` : q.collection;
    const matched: Array<{ path: string; doc: StoredDoc; keys: unknown[] }> = [];
    for (const [path, doc] of this.docs) {
      const slash = path.lastIndexOf("/");
      const collectionPath = path.slice(0, slash);
      if (q.group ? lastSegment(collectionPath) !== q.collection : collectionPath !== parentPath) continue;
      if (!filters.every((f) => matches(getField(doc.data, f.path), f.op, f.value))) continue;
      const keys: unknown[] = [];
      let ordered = true;
      for (const o of orders) {
        // __name__ orders by the document's path (a cursor on it carries the path).
        const v = o.path.length === 1 && o.path[0] === "__name__" ? path : getField(doc.data, o.path);
        if (v === undefined) {
          ordered = false;
          break;
        }
        keys.push(v);
      }
      if (ordered) matched.push({ path, doc, keys });
    }
    const lastDir = orders.length > 0 ? orders[orders.length - 1]!.dir : "asc";
    matched.sort((a, b) => {
      for (let i = 0; i < orders.length; i++) {
        const c = compareValues(a.keys[i], b.keys[i]);
        if (c !== 0) return orders[i]!.dir === "asc" ? c : -c;
      }
      const c = a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
      return lastDir === "asc" ? c : -c;
    });
    let out = matched;
    if (q.startAfter && q.startAfter.length > 0) {
      const cursor = q.startAfter;
      out = out.filter((m) => {
        for (let i = 0; i < cursor.length && i < orders.length; i++) {
          const c = compareValues(m.keys[i], cursor[i]);
          if (c !== 0) return orders[i]!.dir === "asc" ? c > 0 : c < 0;
        }
        return false; // equal on the cursor's prefix: not after it
      });
    }
    if (q.limit !== undefined) out = out.slice(0, q.limit);
    return out.map((m) => ({
      path: m.path,
      id: lastSegment(m.path),
      exists: true,
      data: m.doc.data,
      createTime: m.doc.createTime,
      updateTime: m.doc.updateTime,
    }));
  }

  count(q: QuerySpec): number {
    return this.query(q).length;
  }
}

/**
 * A gate awaited before each primitive reaches the store (the simulator's scheduling point). The
 * detail is a function so that describing the primitive costs nothing unless a trace is printed.
 */
export type Gate = (op: string, detail: () => string) => Promise<void>;
const open: Gate = () => Promise.resolve();

export interface TransactionOptions {
  maxAttempts?: number;
}

/** One transaction attempt: reads recorded with their update times, writes buffered until commit. */
export class StoreTransaction {
  readonly reads = new Map<string, number | null>();
  readonly writes: Write[] = [];
  constructor(private readonly client: StoreClient) {}

  async get(path: string): Promise<Snapshot> {
    const snap = await this.client.get(path);
    if (!this.reads.has(path)) this.reads.set(path, snap.updateTime);
    return snap;
  }
  create(path: string, data: Record<string, unknown>): void {
    this.writes.push({ op: "create", path, data });
  }
  set(path: string, data: Record<string, unknown>): void {
    this.writes.push({ op: "set", path, data });
  }
  update(path: string, patch: Record<string, unknown>): void {
    this.writes.push({ op: "update", path, fields: fieldsOf(patch) });
  }
  delete(path: string): void {
    this.writes.push({ op: "delete", path });
  }
}

/** The asynchronous view of the store that a ledger uses: every primitive awaits the gate first. */
export class StoreClient {
  constructor(
    readonly store: MemoryStore,
    private readonly gate: Gate = open,
  ) {}

  async get(path: string): Promise<Snapshot> {
    await this.gate("get", () => path);
    return this.store.get(path);
  }

  async getAll(paths: readonly string[]): Promise<Snapshot[]> {
    await this.gate("getAll", () => paths.join(", "));
    return paths.map((p) => this.store.get(p));
  }

  async commit(writes: readonly Write[]): Promise<CommitResult> {
    await this.gate("commit", () => describeWrites(writes));
    return this.store.commit(writes);
  }

  /** Non-atomic batched writes (BulkWriter / BatchWrite): each lands or fails on its own. */
  async writeEach(writes: readonly Write[]): Promise<Array<{ ok: true } | { ok: false; error: StoreError }>> {
    const out: Array<{ ok: true } | { ok: false; error: StoreError }> = [];
    for (let i = 0; i < writes.length; i += 20) {
      const group = writes.slice(i, i + 20);
      await this.gate("batchWrite", () => describeWrites(group));
      for (const w of group) {
        try {
          this.store.commit([w]);
          out.push({ ok: true });
        } catch (err) {
          if (!(err instanceof StoreError)) throw err;
          out.push({ ok: false, error: err });
        }
      }
    }
    return out;
  }

  async query(q: QuerySpec): Promise<Snapshot[]> {
    await this.gate("query", () => describeQuery(q));
    return this.store.query(q);
  }

  async count(q: QuerySpec): Promise<number> {
    await this.gate("count", () => describeQuery(q));
    return this.store.count(q);
  }

  /** Runs `fn` until its commit finds every document it read unchanged (at most maxAttempts times). */
  async runTransaction<T>(
    fn: (tx: StoreTransaction) => Promise<T>,
    opts: TransactionOptions = {},
  ): Promise<T> {
    const maxAttempts = opts.maxAttempts ?? 5;
    for (let attempt = 1; ; attempt++) {
      const tx = new StoreTransaction(this);
      const result = await fn(tx);
      const writes = tx.writes;
      await this.gate("commit", () => `transaction: ${describeWrites(writes) || "read-only"}`);
      try {
        this.store.commit(tx.writes, tx.reads);
        return result;
      } catch (err) {
        if (err instanceof StoreError && err.code === StatusCode.ABORTED && attempt < maxAttempts) continue;
        throw err;
      }
    }
  }
}

// --- values ----------------------------------------------------------------------------------------

function lastSegment(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function checkPrecondition(
  path: string,
  cur: StoredDoc | undefined,
  lastUpdateTime: number | undefined,
): void {
  if (lastUpdateTime === undefined) return;
  if (!cur || cur.updateTime !== lastUpdateTime)
    throw new StoreError(
      StatusCode.FAILED_PRECONDITION,
      `update time precondition failed for ${path}: stored ${cur?.updateTime ?? "none"}, expected ${lastUpdateTime}`,
    );
}

function applyFields(data: DocData, fields: ReadonlyArray<readonly [FieldSegments, unknown]>): DocData {
  const root: Record<string, unknown> = { ...data };
  for (const [path, value] of fields) {
    let node = root;
    for (let i = 0; i < path.length - 1; i++) {
      const key = path[i]!;
      const child = node[key];
      const copy =
        child !== null && typeof child === "object" && !Array.isArray(child)
          ? { ...(child as Record<string, unknown>) }
          : {};
      node[key] = copy;
      node = copy;
    }
    node[path[path.length - 1]!] = frozenCopy(value);
  }
  return Object.freeze(root);
}

function getField(data: DocData, path: FieldSegments): unknown {
  let v: unknown = data;
  for (const key of path) {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return undefined;
    v = (v as Record<string, unknown>)[key];
    if (v === undefined) return undefined;
  }
  return v;
}

/** Firestore's order of value types: null, booleans, numbers, strings, arrays, maps. */
function typeRank(v: unknown): number {
  if (v === null) return 0;
  switch (typeof v) {
    case "boolean":
      return 1;
    case "number":
      return 2;
    case "string":
      return 4;
    default:
      return Array.isArray(v) ? 8 : 9;
  }
}

export function compareValues(a: unknown, b: unknown): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra - rb;
  if (ra === 1 || ra === 2) return (a as number) < (b as number) ? -1 : (a as number) > (b as number) ? 1 : 0;
  if (ra === 4) return (a as string) < (b as string) ? -1 : (a as string) > (b as string) ? 1 : 0;
  if (ra === 8) {
    const x = a as unknown[];
    const y = b as unknown[];
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      const c = compareValues(x[i], y[i]);
      if (c !== 0) return c;
    }
    return x.length - y.length;
  }
  if (ra === 9) return deepEqual(a, b) ? 0 : JSON.stringify(a) < JSON.stringify(b) ? -1 : 1;
  return 0;
}

function matches(v: unknown, op: FilterOp, value: unknown): boolean {
  if (v === undefined) return false;
  switch (op) {
    case "==":
      return deepEqual(v, value);
    case "in":
      return (value as unknown[]).some((x) => deepEqual(v, x));
    case "array-contains":
      return Array.isArray(v) && v.some((x) => deepEqual(x, value));
    default: {
      // A range filter matches values of the filter value's type only.
      if (typeRank(v) !== typeRank(value) || v === null) return false;
      const c = compareValues(v, value);
      return op === "<" ? c < 0 : op === "<=" ? c <= 0 : op === ">" ? c > 0 : c >= 0;
    }
  }
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const y = b as unknown[];
    return a.length === y.length && a.every((x, i) => deepEqual(x, y[i]));
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.hasOwn(b, k)) return false;
    if (!deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  }
  return true;
}

/** A frozen deep copy of plain data; undefined fields are dropped (ignoreUndefinedProperties). */
export function frozenCopy(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (Object.isFrozen(v)) return v;
  if (Array.isArray(v)) return Object.freeze(v.map((x) => (x === undefined ? null : frozenCopy(x))));
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = frozenCopy(x);
  return Object.freeze(out);
}

function describeWrites(writes: readonly Write[]): string {
  if (writes.length === 0) return "";
  const first = writes
    .slice(0, 3)
    .map((w) => `${w.op} ${w.path}`)
    .join(", ");
  return writes.length > 3 ? `${first}, … (${writes.length} writes)` : first;
}

function describeQuery(q: QuerySpec): string {
  const where = (q.where ?? []).map(([f, op, v]) => `${f} ${op} ${JSON.stringify(v)}`).join(" and ");
  return `${q.group ? "group " : ""}${q.parent ? `${q.parent}/` : ""}${q.collection}${where ? ` where ${where}` : ""}`;
}
