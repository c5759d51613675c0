// `text-stats`: a realistic multi-step pipeline and the template for your own. Four steps, each
// checkpointed on the item when it finishes, so a redelivery resumes at the first unfinished step:
//   normalize → tokenize → count → summarize
// Payload: { text: string (1..50,000 characters), language?: two-letter code }. With a language,
// its stop words are left out of `topWords`; a well-formed but unsupported language code is a
// PermanentError (retrying cannot fix it), which shows how a pipeline classifies its errors.
// Result: { words, distinctWords, sentences, characters, averageWordLength, topWords, language }.
import { z } from "zod";
import { PermanentError } from "../core/errors";
import { definePipeline } from "./definePipeline";

export const textStatsPayload = z.strictObject({
  text: z.string().min(1).max(50_000),
  language: z
    .string()
    .regex(/^[a-z]{2}$/, "must be a two-letter lowercase language code, e.g. en")
    .optional(),
});
export type TextStatsPayload = z.infer<typeof textStatsPayload>;

const stopWords: Record<string, ReadonlySet<string>> = {
  en: new Set(
    "a an and are as at be but by for from has have he her his i if in is it its of on or she that the their they this to was we were with you".split(
      " ",
    ),
  ),
  de: new Set(
    "aber als am an auf aus bei das dass dem den der des die ein eine einen er es für hat ich ihr im in ist mit nicht sie sind und von war wir zu".split(
      " ",
    ),
  ),
  fr: new Set(
    "au aux avec ce ces dans de des du elle en est et il ils je la le les leur mais ne nous on ou par pas pour qu que qui sa se son sur un une vous".split(
      " ",
    ),
  ),
  es: new Set(
    "a al con de del el ella en es esta este la las lo los mas no o para pero por que se su sus un una y ya".split(
      " ",
    ),
  ),
};
export const textStatsLanguages = Object.keys(stopWords);

export interface NormalizeOutput {
  text: string;
  characters: number;
  sentences: number;
}
export interface TokenizeOutput {
  /** Lower-cased tokens joined by single spaces (compact: checkpoint outputs are size-capped). */
  tokens: string;
  count: number;
}
export interface WordCount {
  word: string;
  count: number;
}
export interface CountOutput {
  words: number;
  distinctWords: number;
  totalWordLength: number;
  topWords: WordCount[];
}
export interface TextStatsResult {
  words: number;
  distinctWords: number;
  sentences: number;
  characters: number;
  averageWordLength: number;
  topWords: WordCount[];
  language: string | null;
}

const topWordCount = 10;
// Letters and digits, allowing inner apostrophes and hyphens ("don't", "well-known").
const wordPattern = /[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/gu;
// A sentence is a run of text ending in terminal punctuation (or the end of the text) that holds a letter.
const sentencePattern = /[^.!?…。！？]+(?:[.!?…。！？]+|$)/gu;

export const textStatsPipeline = definePipeline<TextStatsPayload>({
  name: "text-stats",
  description:
    "Word, sentence and frequency statistics of a text (normalize → tokenize → count → summarize).",
  payload: textStatsPayload,
  timeoutSeconds: 60,
  steps: [
    {
      name: "normalize",
      async run(p): Promise<NormalizeOutput> {
        if (p.language && !stopWords[p.language])
          throw new PermanentError(
            `language "${p.language}" is not supported (supported: ${textStatsLanguages.join(", ")})`,
          );
        const text = p.text.normalize("NFKC").replace(/\s+/gu, " ").trim();
        const sentences = (text.match(sentencePattern) ?? []).filter((s) => /\p{L}/u.test(s)).length;
        return { text, characters: [...text].length, sentences };
      },
    },
    {
      name: "tokenize",
      async run(_p, outputs): Promise<TokenizeOutput> {
        const { text } = outputs.normalize as NormalizeOutput;
        const tokens = (text.toLocaleLowerCase().match(wordPattern) ?? []).map((t) => t.replace(/’/g, "'"));
        return { tokens: tokens.join(" "), count: tokens.length };
      },
    },
    {
      name: "count",
      async run(p, outputs, ctx): Promise<CountOutput> {
        const { tokens } = outputs.tokenize as TokenizeOutput;
        const counts = new Map<string, number>();
        let words = 0;
        let totalWordLength = 0;
        for (const token of tokens === "" ? [] : tokens.split(" ")) {
          if (ctx.signal.aborted) throw ctx.signal.reason;
          words++;
          totalWordLength += [...token].length;
          counts.set(token, (counts.get(token) ?? 0) + 1);
        }
        const skip = p.language ? stopWords[p.language] : undefined;
        const topWords = [...counts]
          .filter(([word]) => !skip?.has(word))
          .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
          .slice(0, topWordCount)
          .map(([word, count]) => ({ word, count }));
        return { words, distinctWords: counts.size, totalWordLength, topWords };
      },
    },
    {
      name: "summarize",
      async run(p, outputs): Promise<TextStatsResult> {
        const normalized = outputs.normalize as NormalizeOutput;
        const counted = outputs.count as CountOutput;
        return {
          words: counted.words,
          distinctWords: counted.distinctWords,
          sentences: normalized.sentences,
          characters: normalized.characters,
          averageWordLength:
            counted.words === 0 ? 0 : Math.round((counted.totalWordLength / counted.words) * 100) / 100,
          topWords: counted.topWords,
          language: p.language ?? null,
        };
      },
    },
  ],
});
