// Runs `fn` over a page of entries with at most `limit` in flight: a page of ledger transactions in
// parallel without opening hundreds of transactions at once.
export async function mapLimited<T, R>(
  entries: readonly T[],
  limit: number,
  fn: (entry: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(entries.length);
  let next = 0;
  const lane = async () => {
    while (next < entries.length) {
      const i = next++;
      out[i] = await fn(entries[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, entries.length)) }, lane));
  return out;
}
