// Safe-by-construction HTML: the `html` template tag escapes every interpolated value unless it is
// already SafeHtml (built by `html` itself or `raw`). Batch ids, pipeline names and error messages
// come from users, so no string reaches the page without passing through `escapeHtml`.

export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const escapes: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
  "`": "&#96;",
};

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"'`]/g, (c) => escapes[c]!);
}

type Interpolation = SafeHtml | string | number | boolean | null | undefined | Interpolation[];

function render(value: Interpolation): string {
  if (value === null || value === undefined || value === false) return "";
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(render).join("");
  return escapeHtml(value);
}

export function html(strings: TemplateStringsArray, ...values: Interpolation[]): SafeHtml {
  let out = strings[0]!;
  values.forEach((v, i) => {
    out += render(v) + strings[i + 1]!;
  });
  return new SafeHtml(out);
}

/** Trusted markup written in this folder (CSS, the inline script): never user input. */
export const raw = (trusted: string) => new SafeHtml(trusted);

/** A path segment: ids may hold any character. */
export const pathSegment = (s: string) => encodeURIComponent(s);
