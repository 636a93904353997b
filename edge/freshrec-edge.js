// FreshRec edge client: the served student graph scored in the browser (onnxruntime-web, WASM).
//
// It mirrors the serving tier's request path (freshrec/serving/service.py) so a list computed here equals
// POST /v1/recommend for the same history: the history is the user's distinct items ordered by their last
// interaction (ties by item id), the last `history_length` of them are scored against the bundle's
// candidates, seen items are removed, and an empty history gets the popularity list minus the seen items.
// Events are kept in a local queue (localStorage) and sent to POST /v1/events when online; each carries an
// event_id chosen once, so a retry after a lost response is dropped as a repeat when the log is landed.
import * as ort from "./vendor/ort/ort.wasm.min.mjs";

ort.env.wasm.wasmPaths = new URL("./vendor/ort/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one thread is the common case on devices

const MAX_BATCH = 500;

async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class IntegrityError extends Error {}

// Ordered history of item ids: distinct, by last interaction (ties by item id), oldest first.
export function orderedHistory(entries) {
  const last = new Map();
  for (const { item_id: item, ts } of entries) {
    if (!last.has(item) || ts >= last.get(item)) last.set(item, ts);
  }
  return [...last.entries()]
    .sort((a, b) => (a[1] - b[1]) || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([item]) => item);
}

export class EdgeBundle {
  constructor(manifest, session, items, popular, candidates) {
    this.manifest = manifest;
    this.version = manifest.model_version;
    this.session = session;
    this.items = items;
    this.index = new Map(items.map((id, i) => [id, i + 1]));
    this.popular = popular;
    this.candidates = BigInt64Array.from(candidates.items, (i) => BigInt(i));
    this.candidatePos = new Int32Array(items.length + 1).fill(-1);
    candidates.items.forEach((item, pos) => { this.candidatePos[item] = pos; });
  }

  // Fetch and verify every file of the manifest (sha256 with WebCrypto), then open the ONNX session.
  static async load(baseUrl, manifest, fetchImpl = fetch) {
    const files = {};
    await Promise.all(Object.entries(manifest.files).map(async ([name, meta]) => {
      const response = await fetchImpl(`${baseUrl}/v1/edge/${manifest.model_version}/${name}`);
      if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
      const buffer = await response.arrayBuffer();
      const digest = await sha256Hex(buffer);
      if (digest !== meta.sha256 || buffer.byteLength !== meta.bytes) {
        throw new IntegrityError(`${name}: sha256 ${digest} does not match the manifest's ${meta.sha256}`);
      }
      files[name] = buffer;
    }));
    const json = (name) => JSON.parse(new TextDecoder().decode(files[name]));
    const session = await ort.InferenceSession.create(new Uint8Array(files["model.onnx"]),
      { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    return new EdgeBundle(manifest, session, json("items.json").items, json("popular.json"), json("candidates.json"));
  }

  // Top-k for an ordered list of item ids (oldest first): {items: [{item_id, score}], reason}. A user with
  // events but none on an item the model knows gets the popularity list as a "fallback", as on the server.
  async rank(historyIds, k = 10, excludeSeen = true) {
    const known = historyIds.map((id) => this.index.get(id)).filter((i) => i !== undefined);
    const history = known.slice(-this.manifest.ranking.history_length);
    const seen = excludeSeen ? new Set(known) : new Set();
    if (history.length === 0) {
      return { items: this.coldStart(k, seen), reason: historyIds.length ? "fallback" : "cold_start" };
    }
    const feeds = {
      history: new ort.Tensor("int64", BigInt64Array.from(history, (i) => BigInt(i)), [1, history.length]),
      candidates: new ort.Tensor("int64", this.candidates, [1, this.candidates.length]),
    };
    const scores = (await this.session.run(feeds)).scores.data;
    const masked = new Uint8Array(scores.length);
    for (const item of seen) {
      const pos = this.candidatePos[item];
      if (pos >= 0) masked[pos] = 1;
    }
    const order = [];
    for (let pos = 0; pos < scores.length; pos++) if (!masked[pos]) order.push(pos);
    // Best first; ties as numpy's argsort-then-reverse leaves them (the later position first).
    order.sort((a, b) => (scores[b] - scores[a]) || (b - a));
    // The served scale: the item's softmax share over the whole candidate row (the model's training loss).
    let top = -Infinity;
    for (let pos = 0; pos < scores.length; pos++) if (scores[pos] > top) top = scores[pos];
    let total = 0;
    for (let pos = 0; pos < scores.length; pos++) total += Math.exp(scores[pos] - top);
    const items = order.slice(0, k).map((pos) => ({
      item_id: this.items[Number(this.candidates[pos]) - 1], score: Math.exp(scores[pos] - top) / total,
    }));
    return { items, reason: "personalised" };
  }

  coldStart(k, seen) {
    const out = [];
    const window = Math.min(this.popular.items.length, k + seen.size);
    for (let n = 0; n < window && out.length < k; n++) {
      const item = this.popular.items[n];
      if (!seen.has(item)) out.push({ item_id: this.items[item - 1], score: this.popular.scores[n] });
    }
    return out;
  }
}

export class EdgeClient {
  // baseUrl: the serving tier ("" for the page's own origin); storage: a localStorage-like object.
  constructor({ baseUrl = "", userId, storage = globalThis.localStorage, fetchImpl = globalThis.fetch.bind(globalThis) }) {
    this.baseUrl = baseUrl;
    this.userId = String(userId);
    this.storage = storage;
    this.fetch = fetchImpl;
    this.bundle = null;
    this.flushing = null;
    this.retryMs = 500;
    this.stats = { sent: 0, accepted: 0, rejected: 0, failures: 0, bundles: 0 };
  }

  get key() { return `freshrec.edge.${this.userId}`; }
  read(name) { return JSON.parse(this.storage.getItem(`${this.key}.${name}`) || "[]"); }
  write(name, value) { this.storage.setItem(`${this.key}.${name}`, JSON.stringify(value)); }

  get history() { return this.read("history"); } // [{item_id, ts}], as recorded
  get queue() { return this.read("queue"); } // events not yet acknowledged by the server

  // Fetch the manifest; load (and verify) the bundle when its version is not the one in use.
  async refresh() {
    const url = `${this.baseUrl}/v1/edge/manifest?user_id=${encodeURIComponent(this.userId)}`;
    const response = await this.fetch(url, { cache: "no-cache" });
    if (!response.ok) throw new Error(`manifest: HTTP ${response.status}`);
    const manifest = await response.json();
    if (!this.bundle || this.bundle.version !== manifest.model_version) {
      this.bundle = await EdgeBundle.load(this.baseUrl, manifest, this.fetch);
      this.stats.bundles += 1;
    }
    return this.bundle.version;
  }

  async recommend(k = 10, excludeSeen = true) {
    if (!this.bundle) await this.refresh();
    const started = performance.now();
    const result = await this.bundle.rank(orderedHistory(this.history), k, excludeSeen);
    return { ...result, user_id: this.userId, model_version: this.bundle.version, ms: performance.now() - started };
  }

  // Record an interaction: local history first (recommendations see it at once), then the send queue.
  record(itemId, eventType = "click", value = 1.0) {
    const event = { event_id: crypto.randomUUID(), user_id: this.userId, item_id: String(itemId),
                    event_type: eventType, value, ts: Date.now() / 1000 };
    this.write("history", [...this.history, { item_id: event.item_id, ts: event.ts }]);
    this.write("queue", [...this.queue, event]);
    this.flush().catch(() => {});
    return event;
  }

  // Send the queue in batches; an event leaves the queue only once the server answered for it.
  flush() {
    if (!this.flushing) this.flushing = this.drain().finally(() => { this.flushing = null; });
    return this.flushing;
  }

  async drain() {
    while (this.queue.length && navigator.onLine) {
      const batch = this.queue.slice(0, MAX_BATCH);
      if (!(await this.send(batch))) {
        this.stats.failures += 1;
        setTimeout(() => this.flush().catch(() => {}), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 30000);
        return false;
      }
      this.retryMs = 500;
      const done = new Set(batch.map((e) => e.event_id));
      this.write("queue", this.queue.filter((e) => !done.has(e.event_id)));
    }
    return this.queue.length === 0;
  }

  // POST one batch; true when the server answered for every event (accepted or rejected for good).
  async send(batch) {
    let response;
    try {
      response = await this.fetch(`${this.baseUrl}/v1/events`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ events: batch }),
      });
    } catch {
      return false; // offline or the server unreachable: retried later with the same event_ids
    }
    if (!response.ok) return false; // 503 (Retry-After) and the like: retried
    const body = await response.json();
    this.stats.sent += batch.length;
    this.stats.accepted += body.accepted;
    this.stats.rejected += body.rejected.length;
    return true;
  }

  // Keep the bundle and the queue current: flush when the browser comes back online, poll the manifest.
  start(pollMs = 30000) {
    globalThis.addEventListener("online", () => { this.flush().catch(() => {}); this.refresh().catch(() => {}); });
    this.timer = setInterval(() => { if (navigator.onLine) this.refresh().catch(() => {}); }, pollMs);
    return this;
  }

  stop() { clearInterval(this.timer); }
}
