// Where the CLI writes: the process's streams, or buffers in a test.
import type { ProgressStream } from "./progressBar";

export interface CliIo {
  out: ProgressStream;
  err: { write(chunk: string): unknown };
  env: NodeJS.ProcessEnv;
}

export const processIo: CliIo = { out: process.stdout, err: process.stderr, env: process.env };

export const println = (stream: { write(chunk: string): unknown }, text: string) => stream.write(`${text}\n`);
