#!/usr/bin/env node
// Launcher for the `tally` CLI (package.json "bin"): registers tsx's CommonJS loader, so the
// TypeScript sources run as they are, from a clone (`npx tally …`) or an installed package.
"use strict";
require("tsx/cjs");
const { runCli } = require("../cli/main.ts");
runCli(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
