// A delivery-rate window shared by the scaling phase and its raw baseline: wait for the first
// `skip` deliveries (the start-up), then count deliveries for `seconds` — or until all but the
// last few of the backlog are through — and divide. A fixed time (rather than a fixed count) keeps
// the phase bounded when the rate is low.
import { setTimeout as sleep } from "node:timers/promises";
import { waitFor } from "../../local/waitFor";
import { perSecond } from "./stats";

export interface DeliveryWindow {
  skip: number;
  seconds: number;
}

export interface WindowMeasure {
  deliveries: number;
  windowMs: number;
  deliveriesPerSecond: number;
}

export async function measureDeliveryWindow(
  delivered: () => number,
  backlog: number,
  window: DeliveryWindow,
  startDeadlineMs: number,
): Promise<WindowMeasure> {
  await waitFor(`${window.skip} deliveries`, () => delivered() >= window.skip, startDeadlineMs, 5);
  const t0 = performance.now();
  const d0 = delivered();
  const stopAt = backlog - Math.max(5, Math.floor(backlog * 0.02));
  while (performance.now() - t0 < window.seconds * 1000 && delivered() < stopAt) await sleep(5);
  const windowMs = performance.now() - t0;
  const deliveries = delivered() - d0;
  return { deliveries, windowMs, deliveriesPerSecond: perSecond(deliveries, windowMs) };
}
