// Keeps a delivery's lease alive while its steps run (DESIGN.md §2.2): a long step never loses its
// item to a redrive while its worker is alive. A timer fires every third of the lease and extends
// it only when the lease would otherwise be at risk, so an item that finishes within a third of
// the lease costs no heartbeat write at all. A heartbeat the ledger refuses means another holder
// (or a terminal state) owns the item now: the run is told to stop.
import type { Logger } from "../core/logger";
import type { Clock, ItemRef, Ledger } from "../core/ports";

export interface LeaseKeeperOptions {
  ledger: Ledger;
  clock: Clock;
  log: Logger;
  ref: ItemRef;
  owner: string;
  leaseMs: number;
  /** When the lease taken by this delivery runs out. */
  leaseUntil: number;
  /** Called once when the lease is lost (refused heartbeat, or expired while heartbeats failed). */
  onLost(message: string): void;
}

export class LeaseKeeper {
  private until: number;
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<boolean> | null = null;
  private lost = false;
  private stopped = false;
  /** Heartbeat writes made (for tests and the op-count benchmarks). */
  beats = 0;

  constructor(private readonly o: LeaseKeeperOptions) {
    this.until = o.leaseUntil;
  }

  get interval(): number {
    return Math.max(50, Math.floor(this.o.leaseMs / 3));
  }

  start(): void {
    this.timer = setInterval(() => void this.beat(false), this.interval);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Extends the lease when less than two thirds of it remain (explicit calls from a step and the
   * timer alike), so frequent `ctx.heartbeat()` calls do not turn into a write each.
   */
  beat(explicit: boolean): Promise<boolean> {
    if (this.lost) return Promise.resolve(false);
    if (this.stopped && !explicit) return Promise.resolve(true);
    const remaining = this.until - this.o.clock.now();
    if (remaining > (this.o.leaseMs * 2) / 3) return Promise.resolve(true);
    if (!this.inFlight)
      this.inFlight = this.extend().finally(() => {
        this.inFlight = null;
      });
    return this.inFlight;
  }

  private async extend(): Promise<boolean> {
    const { ledger, clock, log, ref, owner, leaseMs } = this.o;
    const now = clock.now();
    try {
      const held = await ledger.heartbeat(ref, owner, leaseMs, now);
      this.beats++;
      if (held) {
        this.until = now + leaseMs;
        return true;
      }
      this.markLost(
        "the ledger refused the heartbeat: the lease is held by another delivery or the item is terminal",
      );
      return false;
    } catch (err) {
      log.warn(
        "item.heartbeat_failed",
        `heartbeat failed: ${err instanceof Error ? err.message : String(err)}`,
      );
      // The lease may still be ours until it runs out; the next tick tries again.
      if (clock.now() >= this.until) {
        this.markLost("the lease expired while heartbeats were failing");
        return false;
      }
      return true;
    }
  }

  private markLost(message: string): void {
    if (this.lost) return;
    this.lost = true;
    this.stop();
    this.o.onLost(message);
  }
}
