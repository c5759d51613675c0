// The `tally` usage text: shown by --help, and after every usage error so the right form is one
// glance away.

export const defaultCoordinatorUrl = "http://127.0.0.1:8080";
export const defaultReconcilerUrl = "http://127.0.0.1:8082";

export const usage = `tally — submit and watch Tally batches

Usage:
  tally submit --pipeline P (--file F.json|F.ndjson | --demo N [--fail-rate X] [--permanent-rate Y])
               [--id ID [--resume]] [--threshold T] [--depends-on ID]... [--watch]
  tally status ID [--watch] [--json]
  tally items ID [--status S] [--limit N] [--json]
  tally cancel ID
  tally retry ID [--watch]
  tally reconcile [--reconciler-url URL]
  tally --help

Commands:
  submit      create a batch of any size: --file F.json ({items:[...]} or an array of items) or
              F.ndjson (one {"id"?,"payload"} per line; an optional first header line), or
              --demo N (N items for the demo pipeline: a fraction X fail transiently 1-2 times,
              a fraction Y fail permanently). Sent in requests of at most 10,000 items / 8 MiB
              (open, append…, seal: docs/api.md), with a progress line; an interrupted submit is
              continued with the same --id and --resume (the items already stored are skipped).
  status      a batch's state, counts by item state and outcome
  items       a batch's items (--status pending|running|succeeded|failed, --limit, default 50)
  cancel      cancel a batch: pending items fail as "cancelled", running ones finish
  retry       retry a final batch's failed items (a new generation)
  reconcile   ask the reconciler for one pass now (it also runs on its schedule)

Options:
  --url URL             coordinator (default ${defaultCoordinatorUrl}, or TALLY_URL)
  --reconciler-url URL  reconciler (default ${defaultReconcilerUrl}, or TALLY_RECONCILER_URL;
                        \`npm start\` prints it as "reconciler: URL pid PID")
  --threshold T         largest failed fraction that still ends "partial" (0..1, default 0.05)
  --depends-on ID       wait for this batch to finish first (repeatable)
  --resume              go on with batch --id from the items it already holds
  --watch               follow the batch until it is final: a live progress bar on a terminal,
                        one line per change otherwise
  --interval SECONDS    how often --watch polls (default 1)
  --json                print the API's JSON
  -h, --help            this text

Exit codes: 0 succeeded (or nothing to report), 2 partial, 3 failed or cancelled,
            1 usage error, unreachable service or an error from the API.
`;
