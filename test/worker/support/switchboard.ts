// A loopback switchboard between the Pub/Sub emulator's push and the worker(s) under test. It
// forwards each delivery to the current target, records what was delivered and what the worker
// answered (so tests can count deliveries per item at the server), and can play a worker that
// crashes on every delivery of an item (the connection is destroyed without an answer).
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface DeliveryRecord {
  messageId: string;
  itemId: string | undefined;
  batchId: string | undefined;
  at: number;
  /** The worker's status code; 0 when the connection was dropped or the worker was unreachable. */
  status: number;
  target: string;
  /** How the delivery arrived: a JSON push envelope, or unwrapped (metadata and attributes as headers). */
  form: "wrapped" | "unwrapped" | "other";
}

export class Switchboard {
  readonly deliveries: DeliveryRecord[] = [];
  /** Items whose deliveries are dropped as if the worker crashed. */
  readonly crashItems = new Set<string>();
  private server!: Server;
  target: string | null = null;
  url = "";

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  deliveriesOf(itemId: string): DeliveryRecord[] {
    return this.deliveries.filter((d) => d.itemId === itemId);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    let messageId = "";
    let attributes: Record<string, string> = {};
    let form: DeliveryRecord["form"] = "other";
    if (req.headers["x-goog-pubsub-message-id"]) {
      form = "unwrapped";
      // Unwrapped push: metadata and attributes arrive as headers.
      messageId = String(req.headers["x-goog-pubsub-message-id"]);
      attributes = { itemId: String(req.headers.itemid ?? ""), batchId: String(req.headers.batchid ?? "") };
    } else {
      try {
        const parsed = JSON.parse(body.toString("utf8"));
        messageId = parsed?.message?.messageId ?? "";
        attributes = parsed?.message?.attributes ?? {};
        if (parsed?.message) form = "wrapped";
      } catch {
        // not a push envelope: recorded without ids
      }
    }
    const record: DeliveryRecord = {
      messageId,
      itemId: attributes.itemId,
      batchId: attributes.batchId,
      at: Date.now(),
      status: 0,
      target: this.target ?? "",
      form,
    };
    this.deliveries.push(record);
    if ((record.itemId && this.crashItems.has(record.itemId)) || !this.target) {
      req.socket.destroy();
      return;
    }
    const target = new URL(this.target);
    const upstream = request(
      { host: target.hostname, port: target.port, path: "/", method: req.method, headers: req.headers },
      (up) => {
        record.status = up.statusCode ?? 0;
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", () => {
      // The worker vanished mid-request (killed): the push sees a dropped connection.
      req.socket.destroy();
    });
    upstream.end(body);
  }
}
