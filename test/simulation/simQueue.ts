// The simulator's Pub/Sub: a work topic with one push subscription and its dead-letter topic.
// Doorbells are delivered at least once: a delivery not answered within the ack deadline, or answered
// with an error, is delivered again after a backoff (possibly while the first is still running);
// after maxDeliveryAttempts deliveries it goes to the dead-letter topic. While faults are on, a
// publish may fail (the caller sees it), a message may be lost (as a doorbell acknowledged
// `leased_by_other` whose holder then released the item), duplicated, or delayed.
import type { ItemRef, WorkQueue } from "../../functions/core/ports";
import type { Actor, Scheduler } from "./scheduler";

export interface QueueSettings {
  ackDeadlineMs: number;
  maxDeliveryAttempts: number;
  minBackoffMs: number;
  maxBackoffMs: number;
  /** Fault rates (while the scheduler's faults are on). */
  publishFailRate: number;
  loseRate: number;
  duplicateRate: number;
  /** Probability of a long delivery delay (tens of seconds). */
  delayRate: number;
}

export interface Message {
  id: number;
  ref: ItemRef;
  /** Deliveries so far (Pub/Sub's delivery attempt). */
  deliveries: number;
  visibleAt: number;
  /** The delivery under way, if any: answered after its deadline, it no longer counts. */
  outstanding: { delivery: number; until: number } | null;
}

export class SimQueue {
  readonly work: Message[] = [];
  readonly deadLetters: Message[] = [];
  private ids = 0;
  private deliveryIds = 0;
  published = 0;
  /** Idle lanes waiting for work: called whenever a message is added (Pub/Sub pushes at once). */
  readonly onArrival = new Set<() => void>();

  constructor(
    private readonly sched: Scheduler,
    private readonly s: QueueSettings,
  ) {}

  /** The WorkQueue port as one process sees it (its publishes are its round trips). */
  view(actor: Actor): WorkQueue {
    const q = this;
    return {
      // One queue for every pipeline: the simulator's workers take any pipeline.
      async publish(_pipeline: string, refs: ItemRef[]): Promise<void> {
        if (refs.length === 0) return;
        await q.sched.point(actor, "publish", () =>
          refs.map((r) => `${r.batchId}/${r.itemId}@${r.generation}`).join(","),
        );
        const { rng } = q.sched;
        if (q.sched.faultsOn && rng.chance(q.s.publishFailRate))
          throw new Error(`publish failed (simulated): ${refs.length} doorbells not accepted`);
        for (const ref of refs) {
          q.published++;
          if (q.sched.faultsOn && rng.chance(q.s.loseRate)) {
            q.sched.log(`doorbell ${ref.batchId}/${ref.itemId}@${ref.generation} LOST`);
            continue;
          }
          q.add(ref);
          if (q.sched.faultsOn && rng.chance(q.s.duplicateRate)) q.add(ref);
        }
      },
      get published() {
        return q.published;
      },
    };
  }

  private add(ref: ItemRef): void {
    const { rng } = this.sched;
    const delay =
      this.sched.faultsOn && rng.chance(this.s.delayRate)
        ? rng.between(10_000, 90_000)
        : rng.between(0, 2000);
    this.work.push({
      id: ++this.ids,
      ref: { ...ref },
      deliveries: 0,
      visibleAt: this.sched.now + delay,
      outstanding: null,
    });
    this.wake();
  }

  /** Unanswered deliveries past their deadline count as failed deliveries. */
  private expire(list: Message[], now: number): void {
    for (const m of list) {
      if (m.outstanding && now >= m.outstanding.until) {
        m.outstanding = null;
        this.failed(m, list);
      }
    }
  }

  private failed(m: Message, list: Message[]): void {
    if (list === this.work && m.deliveries >= this.s.maxDeliveryAttempts) {
      list.splice(list.indexOf(m), 1);
      m.deliveries = 0;
      m.visibleAt = this.sched.now + this.sched.rng.between(0, 2000);
      this.deadLetters.push(m);
      this.wake();
      this.sched.log(`doorbell ${m.ref.batchId}/${m.ref.itemId}@${m.ref.generation} DEAD-LETTERED`);
      return;
    }
    const backoff = Math.min(this.s.maxBackoffMs, this.s.minBackoffMs * 2 ** Math.max(0, m.deliveries - 1));
    m.visibleAt = this.sched.now + backoff;
    this.wake();
  }

  private wake(): void {
    for (const w of [...this.onArrival]) w();
  }

  /** A delivery to `actor` (one round trip), or null when nothing is due. */
  async take(actor: Actor, dead = false): Promise<{ message: Message; delivery: number } | null> {
    await this.sched.point(actor, dead ? "pull-dead-letter" : "pull");
    const list = dead ? this.deadLetters : this.work;
    const now = this.sched.now;
    this.expire(list, now);
    let best: Message | undefined;
    for (const m of list) {
      if (m.outstanding || m.visibleAt > now) continue;
      if (!best || m.visibleAt < best.visibleAt) best = m;
    }
    if (!best) return null;
    best.deliveries++;
    const delivery = ++this.deliveryIds;
    best.outstanding = { delivery, until: now + this.s.ackDeadlineMs };
    return { message: best, delivery };
  }

  /** The answer to a delivery: ack (2xx) removes the message, anything else asks for redelivery. */
  async answer(
    actor: Actor,
    taken: { message: Message; delivery: number },
    ack: boolean,
    dead = false,
  ): Promise<void> {
    const { ref } = taken.message;
    await this.sched.point(
      actor,
      ack ? "ack" : "nack",
      () => `${ref.batchId}/${ref.itemId}@${ref.generation}`,
    );
    const list = dead ? this.deadLetters : this.work;
    const m = taken.message;
    if (m.outstanding?.delivery !== taken.delivery) return; // the deadline passed: this answer is void
    m.outstanding = null;
    if (ack) list.splice(list.indexOf(m), 1);
    else this.failed(m, list);
  }

  /** Nothing left to deliver (or being delivered). */
  get empty(): boolean {
    return this.work.length === 0 && this.deadLetters.length === 0;
  }

  /** When the next message becomes due (for idle workers). */
  nextDue(dead = false): number | null {
    const list = dead ? this.deadLetters : this.work;
    let at: number | null = null;
    for (const m of list) {
      const due = m.outstanding ? m.outstanding.until : m.visibleAt;
      if (at === null || due < at) at = due;
    }
    return at;
  }
}
