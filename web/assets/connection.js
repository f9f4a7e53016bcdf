// The WebSocket to /ws: reconnects forever with exponential backoff and jitter, resumes with
// ?since=&epoch= so no delta is missed, and watches heartbeats to tell a dead link from a quiet feed.

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30_000;
// Until two heartbeats have been seen, assume the server default interval.
const DEFAULT_HEARTBEAT_MS = 15_000;
// Missing this many heartbeat intervals marks the data stale; twice as many drops the link.
const STALE_AFTER_BEATS = 2.5;
const WATCH_EVERY_MS = 500;

export class Connection {
  /**
   * @param {object} options
   * @param {string[]} options.symbols codes to subscribe to; empty for the full feed
   * @param {() => {seq: number, epoch: string|null}|null} options.resume the last seq applied
   *   and its epoch, for resuming; null for a fresh snapshot
   * @param {(frame: object) => void} options.onFrame every parsed frame
   * @param {(state: 'connecting'|'live'|'reconnecting'|'silent') => void} options.onState the
   *   link only ('live' = open and heard from); whether there is data is the state's business
   */
  constructor({ symbols, resume, onFrame, onState }) {
    Object.assign(this, { symbols, resume, onFrame, onState });
    this.attempt = 0;
    this.heartbeatMs = DEFAULT_HEARTBEAT_MS;
    this.lastHeartbeat = null;
    this.lastFrame = 0;
    this.socket = null;
  }

  start() {
    this.onState('connecting');
    this.#open();
    setInterval(() => this.#watch(), WATCH_EVERY_MS);
  }

  /** Asks for a fresh snapshot on the open socket (after a seq gap). */
  resync() {
    this.#send({ op: 'subscribe', symbols: this.symbols.length ? this.symbols : null });
  }

  /** Drops the socket and connects again, resuming from wherever `resume` then says (after a
   * checksum mismatch: nowhere, so the server sends a fresh snapshot). */
  restart() {
    if (this.socket) this.#drop(this.socket);
  }

  #url() {
    const url = new URL('/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const resume = this.resume();
    if (resume !== null) {
      url.searchParams.set('since', resume.seq);
      // Without it the server cannot tell the seq is its own, and sends a snapshot.
      if (resume.epoch !== null) url.searchParams.set('epoch', resume.epoch);
    }
    if (this.symbols.length) url.searchParams.set('symbols', this.symbols.join(','));
    return url;
  }

  #open() {
    const socket = new WebSocket(this.#url());
    this.socket = socket;
    // Open means the server answers: the page can say "waiting for data" rather than
    // "connecting" even before the first frame (a server without data sends none at once).
    socket.addEventListener('open', () => {
      this.lastFrame = Date.now();
      if (this.state !== 'live') this.#setState('live');
    });
    socket.addEventListener('message', (event) => {
      this.lastFrame = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to show; the next snapshot or delta carries on
      }
      // The backoff restarts only once the server has said something, so a peer that accepts
      // and drops at once is still retried slowly.
      this.attempt = 0;
      if (this.state !== 'live') this.#setState('live');
      if (frame.type === 'heartbeat') this.#beat();
      this.onFrame(frame);
    });
    socket.addEventListener('close', () => this.#drop(socket));
  }

  /** Forgets `socket` and schedules the next attempt; a socket already dropped is ignored. */
  #drop(socket) {
    if (this.socket !== socket) return;
    this.socket = null;
    socket.close();
    this.#setState('reconnecting');
    // Jitter spreads the clients of a restarted replica over half the delay.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    this.attempt += 1;
    setTimeout(() => this.#open(), ceiling / 2 + Math.random() * (ceiling / 2));
  }

  #beat() {
    const now = Date.now();
    if (this.lastHeartbeat !== null) this.heartbeatMs = now - this.lastHeartbeat;
    this.lastHeartbeat = now;
  }

  #watch() {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    const silence = Date.now() - this.lastFrame;
    const allowed = Math.max(this.heartbeatMs * STALE_AFTER_BEATS, 2000);
    if (silence > 2 * allowed) {
      this.#drop(this.socket); // a dead peer may never finish the closing handshake
    } else if (silence > allowed && this.state === 'live') {
      this.#setState('silent');
    }
  }

  #send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  #setState(state) {
    this.state = state;
    this.onState(state);
  }
}
