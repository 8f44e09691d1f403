// wf dashboard: a live view of the runner's assignments, jobs and agent transcripts.
//
// Vanilla ES2020, no build step, no external assets. It speaks the runner's control protocol
// (JSON text frames over WebSocket at /ws): every connection opens with `hello`, then each
// request {id, request} gets one {id, ok} or {id, error}. Three kinds of socket:
//   - the watch socket: listAssignments (a full snapshot), then `watch` (every document
//     version, forever); it feeds the in-memory document map every page renders from;
//   - the request socket: getJob, updateAssignment, cancel, retry (opened on demand);
//   - one events socket per open job transcript (`events` with follow, resumed from the
//     last applied seq after a drop).
//
// Test hooks (kept stable for the browser tests): body[data-ws] = "open" once the watch
// socket's hello succeeded, "closed" when it drops; every assignment row or element carries
// data-assignment and data-status; the transcript carries data-job and data-seq (the last
// applied event's seq, -1 before any) and each rendered event its data-seq; #unblock-note,
// #unblock, #cancel and #assignment-status on the assignment page.

'use strict';

(() => {
  const PROTOCOL = 1;
  const CLIENT = 'wf-dashboard';
  const HELLO_TIMEOUT_MS = 10000;
  const CALL_TIMEOUT_MS = 30000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const IDLE_WARN_MS = 5 * 60 * 1000;
  const TOKEN = new URLSearchParams(location.search).get('token');
  const FILTERS = ['all', 'pending', 'active', 'blocked', 'waiting_retry', 'complete'];

  // ------------------------------------------------------------------ DOM helpers

  const $ = (sel, root = document) => root.querySelector(sel);

  /** h('div', {class: 'x', 'data-id': 1, onclick: f}, child, [children], 'text') */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children) {
      if (c == null || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  /** Keyed update of `parent`'s children: an item whose signature did not change keeps its
   * nodes (so a button being clicked or a text being selected survives a live update). */
  function syncList(parent, items, keyOf, sigOf, build) {
    const cache = parent._wfCache || new Map();
    const next = new Map();
    const nodes = [];
    for (const item of items) {
      const key = keyOf(item);
      const sig = sigOf(item);
      let entry = cache.get(key);
      if (!entry || entry.sig !== sig) {
        const built = build(item);
        entry = { sig, nodes: Array.isArray(built) ? built.filter(Boolean) : [built] };
      }
      next.set(key, entry);
      nodes.push(...entry.nodes);
    }
    parent._wfCache = next;
    nodes.forEach((n, i) => {
      if (parent.childNodes[i] !== n) parent.insertBefore(n, parent.childNodes[i] || null);
    });
    while (parent.childNodes.length > nodes.length) parent.lastChild.remove();
  }

  /** Rebuilds `el`'s content only when `sig` changed since its last build. */
  function patch(el, sig, build) {
    if (el._wfSig === sig) return;
    el._wfSig = sig;
    el.replaceChildren(...[build()].flat().filter((n) => n != null && n !== false));
  }

  // ------------------------------------------------------------------ formatting

  const shortId = (id) => (id ? String(id).slice(0, 6) : '—');
  const jobHref = (id) => `#/j/${encodeURIComponent(id)}`;
  const assignmentHref = (id) => `#/a/${encodeURIComponent(id)}`;

  function fmtCost(usd) {
    if (usd == null || Number.isNaN(usd)) return '—';
    if (usd > 0 && usd < 0.01) return `$${usd.toFixed(4)}`;
    return `$${usd.toFixed(2)}`;
  }

  function fmtTokens(n) {
    if (n == null) return '—';
    if (n < 1000) return String(n);
    if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
    return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)}M`;
  }

  function tokensOf(u) {
    if (!u) return null;
    const i = u.inputTokens || 0;
    const o = u.outputTokens || 0;
    return i + o;
  }

  const pad2 = (n) => String(n).padStart(2, '0');

  function fmtDur(ms) {
    if (ms == null || Number.isNaN(ms)) return '—';
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${pad2(s % 60)}s`;
    const hr = Math.floor(m / 60);
    if (hr < 24) return `${hr}h ${pad2(m % 60)}m`;
    return `${Math.floor(hr / 24)}d ${pad2(hr % 24)}h`;
  }

  function fmtAge(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h`;
    return `${Math.floor(s / 86400)}d`;
  }

  function fmtTime(ts) {
    if (ts == null) return '—';
    const d = new Date(ts);
    const today = new Date();
    const time = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${time}`;
  }

  const timeEl = (ts) => (ts == null ? '—' : h('time', { datetime: new Date(ts).toISOString(), title: new Date(ts).toString() }, fmtTime(ts)));
  const statusBadge = (status, attrs) => h('span', Object.assign({ class: `badge s-${status}` }, attrs || {}), status);
  const firstLine = (text) => String(text || '').split('\n').find((l) => l.trim()) || '';

  /** A span the ticker keeps current: the time since `since` (mode "dur" or "age"). */
  function since(ts, mode = 'dur', warnAfter = null) {
    if (ts == null) return '—';
    const el = h('span', { 'data-since': ts, 'data-mode': mode, 'data-warn': warnAfter, class: 'nowrap' });
    tickOne(el, Date.now());
    return el;
  }

  /** A span the ticker keeps current: the time left until `ts`. */
  function until(ts) {
    if (ts == null) return '—';
    const el = h('span', { 'data-until': ts, class: 'nowrap' });
    tickOne(el, Date.now());
    return el;
  }

  function tickOne(el, now) {
    if (el.dataset.since) {
      const ms = now - Number(el.dataset.since);
      el.textContent = el.dataset.mode === 'age' ? fmtAge(ms) : fmtDur(ms);
      if (el.dataset.warn) el.classList.toggle('late', ms > Number(el.dataset.warn));
    } else if (el.dataset.until) {
      const ms = Number(el.dataset.until) - now;
      el.textContent = ms > 0 ? `in ${fmtDur(ms)}` : 'due';
    }
  }

  setInterval(() => {
    const now = Date.now();
    document.querySelectorAll('[data-since],[data-until]').forEach((el) => tickOne(el, now));
  }, 1000);

  // ------------------------------------------------------------------ toasts

  function toast(message, kind = 'error', title = null) {
    const el = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
      title ? h('span', { class: 'kind' }, title) : null, message, h('span', { class: 'x', 'aria-hidden': 'true' }, '×'));
    const close = () => el.remove();
    el.addEventListener('click', close);
    $('#toasts').append(el);
    setTimeout(close, kind === 'error' ? 12000 : 5000);
  }

  function toastError(err, what) {
    const kind = err && err.kind ? err.kind : 'error';
    toast(err && err.message ? err.message : String(err), 'error', what ? `${what} (${kind}):` : `${kind}:`);
  }

  // ------------------------------------------------------------------ protocol

  class WireError extends Error {
    constructor(kind, message) {
      super(message);
      this.kind = kind;
    }
  }

  const wireError = (e) => new WireError((e && e.kind) || 'error', (e && e.message) || 'unknown error');

  function wsUrl() {
    const url = new URL('ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : '';
    url.hash = '';
    return url.href;
  }

  /** Opens a WebSocket and says hello. Resolves with {ws, welcome} once the runner answered;
   * later frames go to onFrame, and onClose runs when a greeted socket closes. */
  function connect(onFrame, onClose) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(wsUrl());
      } catch (e) {
        reject(new WireError('unavailable', String(e && e.message ? e.message : e)));
        return;
      }
      let greeted = false;
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      };
      const timer = setTimeout(() => {
        fail(new WireError('unavailable', 'the runner did not answer hello'));
        ws.close();
      }, HELLO_TIMEOUT_MS);
      ws.onopen = () => ws.send(JSON.stringify({ id: 1, request: { op: 'hello', protocol: PROTOCOL, client: CLIENT } }));
      ws.onmessage = (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        if (greeted) {
          onFrame(msg, ws);
          return;
        }
        if (msg.id !== 1) return;
        if (msg.error) {
          fail(wireError(msg.error));
          ws.close();
          return;
        }
        greeted = true;
        settled = true;
        clearTimeout(timer);
        resolve({ ws, welcome: msg.ok || {} });
      };
      ws.onerror = () => {}; // onclose follows with the code
      ws.onclose = (ev) => {
        fail(new WireError('unavailable', `cannot reach the runner (WebSocket closed${ev.code ? `, code ${ev.code}` : ''})`));
        if (greeted) onClose(ev);
      };
    });
  }

  const send = (ws, id, request) => ws.send(JSON.stringify({ id, request }));
  const backoff = (n) => Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** n) * (0.75 + Math.random() * 0.5);

  /** The request socket: one call, one answer, matched by id. */
  const rpc = {
    session: null,
    nextId: 2,
    pending: new Map(),

    ensure() {
      if (!this.session) {
        this.session = connect((msg) => this.onFrame(msg), () => this.onClose());
        this.session.catch(() => { this.session = null; });
      }
      return this.session;
    },

    async call(request) {
      const { ws } = await this.ensure();
      const id = this.nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new WireError('unavailable', `no answer to ${request.op} within ${CALL_TIMEOUT_MS / 1000} s`));
        }, CALL_TIMEOUT_MS);
        this.pending.set(id, { resolve, reject, timer });
        try {
          send(ws, id, request);
        } catch (e) {
          this.pending.delete(id);
          clearTimeout(timer);
          reject(new WireError('unavailable', String(e)));
        }
      });
    },

    onFrame(msg) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.error) p.reject(wireError(msg.error));
      else p.resolve(msg.ok);
    },

    onClose() {
      this.session = null;
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new WireError('unavailable', 'the connection to the runner closed'));
      }
      this.pending.clear();
    },
  };

  // ------------------------------------------------------------------ the document map

  const state = {
    docs: new Map(), // assignment id -> Assignment (newest version seen)
    loaded: false, // a full snapshot arrived at least once
    welcome: null,
  };

  /** Keeps the newest version of a document; true when it changed something. */
  function putDoc(doc) {
    if (!doc || typeof doc.id !== 'string' || !Array.isArray(doc.jobs)) return false;
    const old = state.docs.get(doc.id);
    if (old && typeof old.version === 'number' && old.version > doc.version) return false;
    state.docs.set(doc.id, doc);
    scheduleRender();
    return true;
  }

  /** Replaces the map by a full listing (newer versions already seen are kept). */
  function replaceAll(docs) {
    const next = new Map();
    for (const doc of docs || []) {
      if (!doc || typeof doc.id !== 'string') continue;
      const old = state.docs.get(doc.id);
      next.set(doc.id, old && old.version > doc.version ? old : doc);
    }
    state.docs = next;
    state.loaded = true;
    scheduleRender();
  }

  function findJob(jid) {
    for (const doc of state.docs.values()) {
      const job = doc.jobs.find((j) => j.id === jid);
      if (job) return { doc, job };
    }
    return { doc: null, job: null };
  }

  /** The document whose id is `id`, or the only one it is a prefix of. */
  function findDoc(id) {
    if (state.docs.has(id)) return state.docs.get(id);
    const matches = [...state.docs.values()].filter((d) => d.id.startsWith(id));
    return matches.length === 1 ? matches[0] : null;
  }

  /** The watch socket: a snapshot, then every version, reconnecting with backoff. */
  const watcher = {
    ws: null,
    failures: 0,
    timer: null,

    async start() {
      clearTimeout(this.timer);
      setConn('connecting', 'connecting…');
      let session;
      try {
        session = await connect((msg, ws) => this.onFrame(msg, ws), () => this.dropped());
      } catch (e) {
        if (e.kind === 'invalid' && !this.warned) {
          this.warned = true; // a refused hello (another protocol version): say it once
          toastError(e, 'Connecting');
        }
        this.retry(e);
        return;
      }
      this.ws = session.ws;
      this.failures = 0;
      state.welcome = session.welcome;
      $('#namespace').textContent = session.welcome.namespace || '';
      document.body.dataset.ws = 'open';
      setConn('open', 'live', `runner ${session.welcome.runnerId || '?'}`);
      send(this.ws, 2, { op: 'listAssignments', status: null });
    },

    onFrame(msg, ws) {
      if (msg.id === 2) {
        if (msg.error) toastError(wireError(msg.error), 'Listing assignments');
        else replaceAll(msg.ok);
        send(ws, 3, { op: 'watch', assignment: null });
      } else if (msg.id === 3) {
        if (!msg.error) {
          putDoc(msg.ok);
        } else if (msg.error.kind === 'unavailable') {
          ws.close(); // fell behind: watch again (onclose reconnects)
        } else {
          toastError(wireError(msg.error), 'Watching');
          ws.close();
        }
      }
    },

    dropped() {
      this.ws = null;
      this.retry(null);
    },

    retry(err) {
      document.body.dataset.ws = 'closed';
      const delay = backoff(this.failures++);
      setConn('closed', `offline, retrying in ${Math.ceil(delay / 1000)} s`, err ? err.message : 'the connection dropped');
      scheduleRender();
      this.timer = setTimeout(() => this.start(), delay);
    },
  };

  function setConn(cls, text, title) {
    const el = $('#conn');
    el.className = `conn ${cls}`;
    $('.conn-text', el).textContent = text;
    el.title = title || '';
  }

  // ------------------------------------------------------------------ actions

  /** Runs a request from a button: disables it meanwhile, applies a returned document, shows
   * errors in a toast. */
  async function act(button, what, request, done) {
    if (button) button.disabled = true;
    try {
      const result = await rpc.call(request);
      if (result && Array.isArray(result.jobs)) putDoc(result);
      if (done) done(result);
    } catch (e) {
      toastError(e, what);
    } finally {
      if (button && button.isConnected) button.disabled = false;
    }
  }

  const actions = {
    unblock(btn) {
      const aid = btn.dataset.aid;
      const area = $('#unblock-note');
      const note = area ? area.value.trim() : '';
      // Waiting at a workflow's human gate: only `approve` passes it.
      const gate = btn.dataset.gate === '1';
      const request = gate
        ? { op: 'approve', assignment: aid }
        : { op: 'updateAssignment', assignment: aid, status: 'active' };
      if (note) request.note = note;
      return act(btn, gate ? 'Approve' : 'Unblock', request, () => {
        if (area) area.value = '';
        toast(`Assignment ${shortId(aid)} ${gate ? 'approved' : 'unblocked'}`, 'ok');
      });
    },
    cancel(btn) {
      const aid = btn.dataset.aid;
      if (!confirm(`Cancel assignment ${shortId(aid)}? Its running jobs are stopped and nothing more runs.`)) return null;
      return act(btn, 'Cancel', { op: 'cancel', target: aid }, () => toast(`Assignment ${shortId(aid)} cancelled`, 'ok'));
    },
    kill(btn) {
      const jid = btn.dataset.jid;
      if (!confirm(`Kill job ${shortId(jid)}? The runner stops its agent.`)) return null;
      return act(btn, 'Kill', { op: 'cancel', target: jid }, () => toast(`Kill of job ${shortId(jid)} requested`, 'ok'));
    },
    retry(btn) {
      const jid = btn.dataset.jid;
      return act(btn, 'Retry', { op: 'retry', job: jid }, () => toast(`Job ${shortId(jid)} will run again`, 'ok'));
    },
  };

  document.addEventListener('click', (ev) => {
    const btn = ev.target.closest('[data-action]');
    if (!btn || btn.disabled) return;
    const fn = actions[btn.dataset.action];
    if (!fn) return;
    ev.preventDefault();
    ev.stopPropagation();
    fn(btn);
  });

  const actionButton = (action, label, attrs, cls = '') => h('button', Object.assign({ type: 'button', class: `btn sm ${cls}`, 'data-action': action }, attrs), label);

  function jobActions(job) {
    const out = [];
    if (job.status === 'failed') out.push(actionButton('retry', 'Retry', { 'data-jid': job.id, title: 'Run this job again' }));
    if (job.status === 'running') {
      out.push(job.cancelRequested
        ? h('span', { class: 'tag err' }, 'kill requested')
        : actionButton('kill', 'Kill', { 'data-jid': job.id, title: 'Stop its agent' }, 'danger'));
    }
    return out;
  }

  // ------------------------------------------------------------------ job metrics

  /** Live counters while running (this attempt), else what the job spent overall. */
  function jobNumbers(job) {
    const p = job.progress;
    const live = job.status === 'running' && p;
    const usage = live ? p : job.usage;
    return {
      tools: p && p.toolCalls != null ? p.toolCalls : null,
      tokens: tokensOf(usage),
      input: usage ? usage.inputTokens : null,
      output: usage ? usage.outputTokens : null,
      cost: usage ? usage.costUsd : null,
    };
  }

  function durationCell(job) {
    if (job.status === 'running' && job.startedAt) return since(job.startedAt);
    if (job.startedAt && job.completedAt) return fmtDur(job.completedAt - job.startedAt);
    return '—';
  }

  function idleCell(job) {
    if (job.status !== 'running') return '—';
    const last = (job.progress && job.progress.lastEventAt) || job.startedAt;
    return since(last, 'dur', IDLE_WARN_MS);
  }

  function checkChip(c) {
    const counts = c.counts ? `${c.counts.passed} passed, ${c.counts.failed} failed${c.counts.skipped ? `, ${c.counts.skipped} skipped` : ''}` : null;
    const exit = c.exitCode == null ? 'killed' : (c.exitCode === 0 ? 'passed' : `exit ${c.exitCode}`);
    const what = c.timedOut ? 'timed out' : counts || exit;
    const title = `${c.command}\n${c.required ? 'required' : 'optional'} · ${fmtDur(c.durationMs)}${c.outputTail ? `\n\n${c.outputTail}` : ''}`;
    return h('span', { class: `check ${c.passed ? 'pass' : 'fail'} ${c.required ? '' : 'opt'}`, title },
      `${c.passed ? '✓' : '✗'} ${c.name}: ${what}`);
  }

  // ------------------------------------------------------------------ list page

  function matchesFilter(doc, filter) {
    if (filter === 'all') return true;
    if (filter === 'waiting_retry') return doc.jobs.some((j) => j.status === 'waiting_retry');
    return doc.status === filter;
  }

  function jobCounts(doc) {
    const archived = (doc.archive && doc.archive.jobs) || 0;
    const by = (s) => doc.jobs.filter((j) => j.status === s).length;
    return {
      done: by('complete') + archived,
      total: doc.jobs.length + archived,
      failed: by('failed'),
      running: doc.jobs.filter((j) => j.status === 'running'),
      waiting: by('waiting_retry'),
    };
  }

  function listRow(doc) {
    const c = jobCounts(doc);
    const tokens = tokensOf(doc.usage);
    const star = firstLine(doc.northStar);
    return h('tr', { class: 'link', 'data-assignment': doc.id, 'data-status': doc.status, 'data-href': assignmentHref(doc.id) },
      h('td', { 'data-label': 'id' }, h('a', { href: assignmentHref(doc.id), class: 'mono', title: doc.id }, shortId(doc.id))),
      h('td', { class: 'star wide', title: doc.northStar }, star),
      h('td', { 'data-label': 'status', class: 'nowrap' }, statusBadge(doc.status),
        c.running.map((j) => h('span', { class: 'tag run', title: `job ${j.id} running` }, `▶ ${j.jobType}`)),
        c.waiting ? h('span', { class: 'tag wait', title: 'a job waits to retry' }, '↻ retry') : null,
        c.failed ? h('span', { class: 'tag err' }, `✗ ${c.failed}`) : null),
      h('td', { 'data-label': 'jobs', class: 'num' }, `${c.done}/${c.total}`),
      h('td', { 'data-label': 'cost', class: 'num' }, fmtCost(doc.usage && doc.usage.costUsd)),
      h('td', { 'data-label': 'tokens', class: 'num', title: doc.usage ? `${doc.usage.inputTokens} in · ${doc.usage.outputTokens} out` : null }, fmtTokens(tokens)),
      h('td', { 'data-label': 'age', class: 'num' }, since(doc.createdAt, 'age')));
  }

  class ListView {
    constructor(filter) {
      this.filter = FILTERS.includes(filter) ? filter : 'all';
    }

    mount(main) {
      this.filters = h('div', { class: 'filters', role: 'group', 'aria-label': 'Status filter' });
      this.body = h('tbody', { id: 'assignments' });
      this.empty = h('div', { class: 'empty', hidden: true });
      const table = h('table', { class: 'grid cards' },
        h('thead', {}, h('tr', {},
          h('th', {}, 'id'), h('th', {}, 'north star'), h('th', {}, 'status'), h('th', { class: 'num' }, 'jobs'),
          h('th', { class: 'num' }, 'cost'), h('th', { class: 'num' }, 'tokens'), h('th', { class: 'num' }, 'age'))),
        this.body);
      this.body.addEventListener('click', (ev) => {
        if (ev.target.closest('a, button')) return;
        const tr = ev.target.closest('tr[data-href]');
        if (tr && !window.getSelection().toString()) location.hash = tr.dataset.href;
      });
      main.append(h('section', { class: 'card' },
        h('div', { class: 'card-head' }, h('h1', {}, 'Assignments'), h('span', { class: 'spacer' }), this.filters),
        h('div', { class: 'table-wrap' }, table), this.empty));
      setCrumbs([]);
      document.title = 'wf · assignments';
    }

    update() {
      const docs = [...state.docs.values()].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? -1 : 1));
      const counts = Object.fromEntries(FILTERS.map((f) => [f, docs.filter((d) => matchesFilter(d, f)).length]));
      patch(this.filters, `${this.filter}|${JSON.stringify(counts)}`, () => FILTERS.map((f) => h('a', {
        class: 'btn sm', role: 'button', href: f === 'all' ? '#/' : `#/?status=${f}`, 'data-filter': f,
        'aria-pressed': String(f === this.filter),
      }, f.replace('_', ' '), h('span', { class: 'count' }, counts[f]))));
      const shown = docs.filter((d) => matchesFilter(d, this.filter));
      syncList(this.body, shown, (d) => d.id, (d) => `${d.version}|${d.updatedAt}|${d.status}`, listRow);
      this.empty.hidden = shown.length > 0;
      if (!shown.length) {
        patch(this.empty, `${state.loaded}|${this.filter}|${docs.length}`, () => {
          if (!state.loaded) return 'Waiting for the runner…';
          if (!docs.length) return ['No assignments yet. Create one with ', h('code', {}, 'wf create "…"'), '.'];
          return `No ${this.filter.replace('_', ' ')} assignments.`;
        });
      }
    }

    unmount() {}
  }

  // ------------------------------------------------------------------ assignment page

  /// The human gate the assignment waits at: the first unfinished job, if it is one.
  function waitingGate(doc) {
    const next = doc.jobs.find((j) => !['complete', 'failed', 'skipped'].includes(j.status));
    return next && next.jobType === 'gate' && next.status === 'pending' && next.task && next.task.gate && next.task.gate.kind === 'human' ? next : null;
  }

  function chainRows(doc, job, index) {
    const n = jobNumbers(job);
    const grouped = job.groupId && doc.jobs.some((j) => j !== job && j.groupId === job.groupId);
    const subs = [];
    if (job.status === 'waiting_retry') subs.push(h('div', {}, '↻ retry ', until(job.retryAfter), job.failureDetail ? ` — ${job.failureDetail}` : ''));
    if (job.status === 'failed' && (job.failureReason || job.failureDetail)) {
      subs.push(h('div', { class: 'failure' }, `${job.failureReason || 'failed'}${job.failureDetail ? `: ${job.failureDetail}` : ''}`));
    }
    if (job.checks && job.checks.length) subs.push(h('div', { class: 'checks' }, job.checks.map(checkChip)));
    if (job.progress && job.progress.lastActivity && job.status === 'running') subs.push(h('div', { class: 'muted mono' }, `⋯ ${job.progress.lastActivity}`));
    const row = h('tr', { class: `${grouped ? 'group' : ''} ${subs.length ? 'has-sub' : ''}`, 'data-job': job.id, 'data-status': job.status },
      h('td', { 'data-label': `#${index + 1 + ((doc.archive && doc.archive.jobs) || 0)}` }, h('a', { href: jobHref(job.id), class: 'mono', title: job.id }, shortId(job.id))),
      h('td', { 'data-label': 'type' }, job.jobType, job.pmReminder ? h('span', { class: 'tag' }, 'reminder') : null,
        job.task ? h('span', { class: 'tag', title: job.task.dependsOn ? `after ${job.task.dependsOn.join(', ')}` : 'workflow task' }, `${job.task.id}${job.task.round > 1 ? ` #${job.task.round}` : ''}`) : null),
      h('td', { 'data-label': 'harness' }, job.harness, job.model ? h('span', { class: 'muted' }, ` · ${job.model}`) : null),
      h('td', { 'data-label': 'status', class: 'nowrap' }, statusBadge(job.status)),
      h('td', { 'data-label': 'attempt', class: 'num' }, job.attempt),
      h('td', { 'data-label': 'duration', class: 'num' }, durationCell(job)),
      h('td', { 'data-label': 'idle', class: 'num' }, idleCell(job)),
      h('td', { 'data-label': 'tools', class: 'num' }, n.tools == null ? '—' : n.tools),
      h('td', { 'data-label': 'tokens', class: 'num', title: n.input != null ? `${n.input} in · ${n.output} out` : null }, fmtTokens(n.tokens)),
      h('td', { 'data-label': 'cost', class: 'num' }, fmtCost(n.cost)),
      h('td', { class: 'wide' }, h('div', { class: 'actions' }, jobActions(job))));
    const sub = subs.length ? h('tr', { class: 'sub' }, h('td', { colspan: 11 }, h('div', { class: 'sub-box' }, subs))) : null;
    return [row, sub];
  }

  function kv(pairs) {
    return h('dl', { class: 'kv' }, pairs.filter((p) => p && p[1] != null && p[1] !== '').map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
  }

  function usageText(u) {
    if (!u) return '—';
    return `${fmtTokens(u.inputTokens)} in · ${fmtTokens(u.outputTokens)} out · ${fmtCost(u.costUsd)}`;
  }

  function budgetText(b) {
    if (!b) return null;
    const parts = [];
    if (b.maxCostUsd != null) parts.push(`${fmtCost(b.maxCostUsd)} max`);
    if (b.maxJobs != null) parts.push(`${b.maxJobs} jobs`);
    if (b.maxPmRounds != null) parts.push(`${b.maxPmRounds} PM rounds`);
    if (b.maxWallMs != null) parts.push(`${fmtDur(b.maxWallMs)} wall`);
    if (b.maxReviewCycles != null) parts.push(`${b.maxReviewCycles} reviews`);
    return parts.length ? parts.join(' · ') : null;
  }

  function link(url, text) {
    return /^https?:\/\//.test(url || '') ? h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, text) : text;
  }

  function assignmentMeta(doc) {
    const ws = doc.workspace;
    const forge = doc.forge;
    const issue = forge && forge.issue;
    const pr = forge && forge.pullRequest;
    const lease = doc.lease;
    return kv([
      ['created', h('span', {}, timeEl(doc.createdAt), ' (', since(doc.createdAt, 'age'), ' ago)')],
      ['updated', timeEl(doc.updatedAt)],
      ['started', doc.startedAt ? timeEl(doc.startedAt) : null],
      ['usage', usageText(doc.usage)],
      ['budget', budgetText(doc.budget)],
      ['priority', `${doc.priority}${doc.independent ? ' · independent' : ''}`],
      ['PM rounds', doc.pmRounds],
      ['branch', ws ? h('span', { class: 'mono', title: `${ws.path} on ${ws.host}` }, ws.branch, h('span', { class: 'muted' }, ` ← ${ws.baseBranch}@${String(ws.baseCommit).slice(0, 8)}`)) : null],
      ['repository', forge ? forge.repo : null],
      ['issue', issue ? link(issue.url, `#${issue.number} ${issue.title}`) : null],
      ['pull request', pr ? h('span', {}, link(pr.url, `#${pr.number}`), pr.draft ? h('span', { class: 'tag' }, 'draft') : null) : null],
      ['lease', lease ? h('span', { title: `runner ${lease.runnerId}, epoch ${lease.epoch}` }, `${lease.host} · ${lease.jobIds.map(shortId).join(', ')} · expires `, until(lease.expiresAt)) : null],
    ]);
  }

  function textSections(doc) {
    const out = [];
    const block = (title, text) => h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, title)), h('div', { class: 'card-body' }, h('pre', { class: 'block' }, text)));
    if (doc.artifacts && doc.artifacts.trim()) out.push(block('Artifacts', doc.artifacts));
    if (doc.decisions && doc.decisions.trim()) out.push(block('Decisions', doc.decisions));
    if (doc.notes && doc.notes.length) {
      out.push(h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Notes for the next PM')),
        h('div', { class: 'card-body' }, h('dl', { class: 'kv one' },
          doc.notes.map((n) => h('div', {}, h('dt', {}, timeEl(n.at)), h('dd', { class: 'pre' }, n.text)))))));
    }
    return out;
  }

  class AssignmentView {
    constructor(id) {
      this.id = id;
      this.fetching = false;
      this.missing = null;
    }

    mount(main) {
      this.root = h('div', { 'data-assignment': this.id });
      this.head = h('div', { class: 'title-row' });
      this.status = h('span', { id: 'assignment-status', class: 'badge' });
      this.blocked = h('div', { class: 'alert warn', hidden: true });
      this.note = h('textarea', { id: 'unblock-note', rows: 3, placeholder: 'A note for the next PM: what was decided, what to do next (optional)' });
      this.unblockBtn = actionButton('unblock', 'Unblock', { id: 'unblock', 'data-aid': this.id }, 'primary');
      this.unblockForm = h('div', { class: 'unblock', hidden: true }, this.note, this.unblockBtn);
      this.cancelBtn = actionButton('cancel', 'Cancel assignment', { id: 'cancel', 'data-aid': this.id }, 'danger');
      this.star = h('p', { class: 'north-star clamp', title: 'Click to expand', onclick: (e) => e.currentTarget.classList.toggle('clamp') });
      this.meta = h('div', { class: 'card-body' });
      this.chain = h('tbody');
      this.chainNote = h('div', { class: 'card-body muted small', hidden: true });
      this.texts = h('div');
      this.notFound = h('div', { class: 'empty', hidden: true });
      this.page = h('div', {},
        h('section', { class: 'card' },
          h('div', { class: 'card-head' }, this.head, h('span', { class: 'spacer' }), this.cancelBtn),
          h('div', { class: 'card-body' }, this.star, this.blocked, this.unblockForm)),
        h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Details')), this.meta),
        h('section', { class: 'card' },
          h('div', { class: 'card-head' }, h('h2', {}, 'Chain')),
          this.chainNote,
          h('div', { class: 'table-wrap' }, h('table', { class: 'grid cards' },
            h('thead', {}, h('tr', {}, ['job', 'type', 'harness · model', 'status', 'att.', 'duration', 'idle', 'tools', 'tokens', 'cost', ''].map((t, i) => h('th', { class: i >= 4 && i <= 9 ? 'num' : null }, t)))),
            this.chain))),
        this.texts);
      this.root.append(this.notFound, this.page);
      main.append(this.root);
    }

    update() {
      const doc = findDoc(this.id);
      if (!doc) return this.absent();
      this.notFound.hidden = true;
      this.page.hidden = false;
      this.root.dataset.assignment = doc.id;
      this.root.dataset.status = doc.status;
      this.unblockBtn.dataset.aid = doc.id;
      this.cancelBtn.dataset.aid = doc.id;
      setCrumbs([['assignment', null, doc.id]]);
      document.title = `wf · ${firstLine(doc.northStar).slice(0, 60)}`;
      this.status.textContent = doc.status;
      this.status.className = `badge s-${doc.status}`;
      patch(this.head, doc.id, () => [h('h1', {}, 'Assignment ', h('code', { title: doc.id }, doc.id)), this.status]);
      patch(this.star, doc.northStar, () => doc.northStar);
      const blocked = doc.status === 'blocked';
      this.blocked.hidden = !blocked;
      patch(this.blocked, `${blocked}|${doc.blockedReason}`, () => [h('strong', {}, 'Blocked: '), doc.blockedReason || 'no reason given']);
      this.unblockForm.hidden = !blocked;
      const gate = waitingGate(doc);
      this.unblockBtn.dataset.gate = gate ? '1' : '';
      patch(this.unblockBtn, gate ? 'approve' : 'unblock', () => (gate ? `Approve gate ${gate.task.id}` : 'Unblock'));
      this.cancelBtn.hidden = doc.status === 'complete';
      patch(this.meta, `${doc.version}|${doc.updatedAt}`, () => assignmentMeta(doc));
      const archived = (doc.archive && doc.archive.jobs) || 0;
      this.chainNote.hidden = !archived && doc.jobs.length > 0;
      this.chainNote.textContent = archived
        ? `${archived} older finished job${archived === 1 ? ' is' : 's are'} archived (wf jobs --assignment ${doc.id} lists them).`
        : 'No jobs yet.';
      syncList(this.chain, doc.jobs.map((j, i) => [j, i]), ([j]) => j.id, ([j, i]) => `${i}|${JSON.stringify(j)}|${doc.jobs.filter((x) => x.groupId && x.groupId === j.groupId).length}`, ([j, i]) => chainRows(doc, j, i));
      patch(this.texts, JSON.stringify([doc.artifacts, doc.decisions, doc.notes]), () => textSections(doc));
      return undefined;
    }

    absent() {
      this.page.hidden = true;
      this.notFound.hidden = false;
      setCrumbs([['assignment', null, this.id]]);
      if (!state.loaded) {
        this.notFound.textContent = 'Waiting for the runner…';
        return;
      }
      if (this.missing) {
        this.notFound.textContent = this.missing;
        return;
      }
      this.notFound.textContent = 'Loading…';
      if (this.fetching) return;
      this.fetching = true;
      rpc.call({ op: 'getAssignment', assignment: this.id })
        .then((doc) => { if (!putDoc(doc)) this.missing = `No assignment ${this.id}.`; })
        .catch((e) => { this.missing = `${e.message} (${e.kind})`; })
        .finally(() => { this.fetching = false; scheduleRender(); });
    }

    unmount() {}
  }

  // ------------------------------------------------------------------ job page: transcript

  /** Renders live events into the transcript element, with the follow latch. */
  class Transcript {
    constructor(jobId) {
      this.el = h('div', { class: 'transcript', 'data-job': jobId, 'data-seq': '-1', role: 'log', 'aria-live': 'off' });
      this.followBtn = h('button', { type: 'button', class: 'btn sm primary follow', hidden: true, onclick: () => this.follow(true) }, '↓ follow');
      this.wrap = h('div', { class: 'transcript-wrap' }, this.el, this.followBtn);
      this.following = true;
      this.scrollPending = false;
      // The latch: following while the view is at its end; a move up (wheel, touch, keys,
      // scrollbar) lets go, coming back to the end takes it again.
      this.el.addEventListener('scroll', () => (this.atEnd() ? this.follow(false) : this.unfollow()), { passive: true });
      this.el.addEventListener('wheel', (e) => { if (e.deltaY < 0) this.unfollow(); }, { passive: true });
      this.el.addEventListener('touchmove', () => { if (!this.atEnd()) this.unfollow(); }, { passive: true });
      this.reset();
    }

    atEnd() {
      return this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - 24;
    }

    unfollow() {
      this.following = false;
      this.followBtn.hidden = false;
    }

    reset() {
      this.el.replaceChildren();
      this.el.dataset.seq = '-1';
      this.lastSeq = -1;
      this.lastText = null;
      this.tools = new Map();
      this.summary = { model: null, usage: null, toolCalls: 0 };
      this.following = true;
      this.followBtn.hidden = true;
      this.autoTop = 0;
    }

    follow(scroll = true) {
      this.following = true;
      this.followBtn.hidden = true;
      if (scroll) this.toEnd();
    }

    toEnd() {
      this.el.scrollTop = this.el.scrollHeight;
      this.autoTop = this.el.scrollTop;
    }

    add(node, keepText = false) {
      if (!keepText) this.lastText = null;
      this.el.append(node);
      this.scrollSoon();
    }

    scrollSoon() {
      if (this.following && !this.scrollPending) {
        this.scrollPending = true;
        setTimeout(() => {
          this.scrollPending = false;
          // Moved up since the last automatic scroll, before its scroll event came: let go.
          if (this.el.scrollTop < this.autoTop - 2) this.unfollow();
          else if (this.following) this.toEnd();
        }, 0);
      }
    }

    note(text, cls = 'ev-meta') {
      this.add(h('div', { class: `ev ${cls}` }, text));
    }

    apply(ev) {
      if (typeof ev.seq !== 'number' || ev.seq <= this.lastSeq) return;
      this.lastSeq = ev.seq;
      const node = this.render(ev);
      if (node) this.add(node, node === this.lastText);
      else this.scrollSoon();
      this.el.dataset.seq = String(ev.seq);
    }

    render(ev) {
      const at = ev.at ? new Date(ev.at).toString() : null;
      const base = (cls, ...kids) => h('div', { class: `ev ${cls}`, 'data-seq': ev.seq, 'data-kind': ev.kind, title: at }, ...kids);
      switch (ev.kind) {
        case 'session':
          if (ev.model) this.summary.model = ev.model;
          return base('ev-meta', `● session ${ev.id || '?'}${ev.model ? ` · ${ev.model}` : ''}`);
        case 'text': {
          const span = h('span', { 'data-seq': ev.seq }, ev.text || '');
          if (ev.delta && this.lastText) {
            this.lastText.append(span);
            return null;
          }
          const block = h('div', { class: 'ev ev-text', 'data-kind': 'text', title: at }, span);
          this.lastText = block;
          return block;
        }
        case 'tool_use':
          this.summary.toolCalls += 1;
          this.tools.set(ev.id, ev.name);
          return base('ev-tool', h('span', { class: 'tool-name' }, `[${ev.name || '?'}]`), h('span', { class: 'tool-input fold', onclick: unfold }, ev.input || ''));
        case 'tool_result': {
          const name = this.tools.get(ev.id);
          return base(`ev-result ${ev.isError ? 'err' : 'ok'}`, h('span', { class: 'mark' }, ev.isError ? '✗' : '✓'),
            h('pre', { class: 'fold', onclick: unfold }, `${name ? `${name}: ` : ''}${ev.output || (ev.isError ? 'error' : 'ok')}`));
        }
        case 'usage':
          this.summary.usage = ev;
          return null;
        case 'rate_limit':
          if (!ev.rejected) return null;
          return base('ev-warn', `⊘ rate limited${ev.resetsAt ? `, resets at ${fmtTime(ev.resetsAt)}` : ''}`);
        case 'api_retry':
          return base('ev-warn', `↻ API retry${ev.status ? ` (HTTP ${ev.status})` : ''}: ${ev.error || ''}`);
        case 'warning':
          return base('ev-warn', `⚠ ${ev.message || ''}`);
        case 'malformed':
          return base('ev-warn', `⚠ unreadable output: ${ev.message || ''}`);
        case 'result':
          return base(`ev-final ${ev.success ? 'ok' : 'err'}`, h('div', { class: 'head' }, ev.success ? '✓ Result' : '✗ Failed'), ev.text ? h('pre', {}, ev.text) : null);
        case 'exit': {
          if (ev.usage) this.summary.usage = ev.usage;
          const spent = ev.usage ? ` · ${usageText(ev.usage)}` : '';
          return base('ev-exit', `■ ${ev.outcome || 'exit'}${ev.detail ? ` — ${ev.detail}` : ''}${ev.exitCode != null ? ` · exit code ${ev.exitCode}` : ''}${spent}`);
        }
        default:
          return base('ev-meta', `${ev.kind}: ${JSON.stringify(ev)}`);
      }
    }
  }

  function unfold(ev) {
    if (!window.getSelection().toString()) ev.currentTarget.classList.toggle('fold');
  }

  /** One attempt's event stream on a socket of its own, resumed from the last applied seq. */
  class EventStream {
    constructor(jobId, attempt, transcript, onState) {
      this.jobId = jobId;
      this.attempt = attempt;
      this.transcript = transcript;
      this.onState = onState;
      this.closed = false;
      this.failures = 0;
      this.ws = null;
      this.open();
    }

    async open() {
      if (this.closed) return;
      this.onState('connecting…');
      let session;
      try {
        session = await connect((msg) => this.onFrame(msg), () => this.dropped());
      } catch (e) {
        this.retry(e.message);
        return;
      }
      if (this.closed) {
        session.ws.close();
        return;
      }
      this.ws = session.ws;
      this.failures = 0;
      send(this.ws, 2, { op: 'events', job: this.jobId, attempt: this.attempt, from: this.transcript.lastSeq + 1, follow: true });
      this.onState('live', 'live');
    }

    onFrame(msg) {
      if (msg.id !== 2 || this.closed) return;
      if (msg.error) {
        if (msg.error.kind === 'unavailable') {
          this.ws.close();
          return;
        }
        this.transcript.note(`${msg.error.message} (${msg.error.kind})`, 'ev-warn');
        this.onState(`stopped: ${msg.error.kind}`);
        this.close();
        return;
      }
      const ok = msg.ok || {};
      if (ok.event) {
        this.transcript.apply(ok.event);
        this.onSummary();
      } else if (typeof ok.line === 'string') {
        this.transcript.add(h('div', { class: 'ev ev-line' }, ok.line));
      } else if (ok.missed != null) {
        this.transcript.add(h('div', { class: 'ev ev-missed' }, `⋯ ${ok.missed} event${ok.missed === 1 ? '' : 's'} dropped: this view fell behind`));
      } else if (ok.end) {
        this.transcript.note('— end of attempt —', 'ev-meta ev-end');
        this.onState('ended');
        this.close();
      }
    }

    onSummary() {
      if (this.summaryTimer) return;
      this.summaryTimer = setTimeout(() => {
        this.summaryTimer = null;
        this.onState(null);
      }, 100);
    }

    dropped() {
      this.ws = null;
      if (!this.closed) this.retry('the connection dropped');
    }

    retry(why) {
      if (this.closed) return;
      const delay = backoff(this.failures++);
      this.onState(`reconnecting in ${Math.ceil(delay / 1000)} s`, '', why);
      this.timer = setTimeout(() => this.open(), delay);
    }

    close() {
      this.closed = true;
      clearTimeout(this.timer);
      clearTimeout(this.summaryTimer);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close();
      }
    }
  }

  // ------------------------------------------------------------------ job page

  function jobFields(job, doc, detail) {
    const n = jobNumbers(job);
    const aid = job.assignmentId;
    const star = doc ? doc.northStar : detail && detail.northStar;
    const commits = job.commits;
    return kv([
      ['job', h('code', {}, job.id)],
      ['assignment', h('span', {}, h('a', { href: assignmentHref(aid), class: 'mono' }, shortId(aid)), star ? h('span', { class: 'muted' }, ` ${firstLine(star).slice(0, 90)}`) : null)],
      ['type', `${job.jobType}${job.pmReminder ? ' (reminder)' : ''}`],
      ['harness', `${job.harness}${job.model ? ` · ${job.model}` : ''}`],
      ['status', statusBadge(job.status, { id: 'job-status' })],
      ['attempt', job.attempt],
      ['group', job.groupId ? h('code', {}, job.groupId) : null],
      ['created', timeEl(job.createdAt)],
      ['started', job.startedAt ? timeEl(job.startedAt) : null],
      ['completed', job.completedAt ? timeEl(job.completedAt) : null],
      ['duration', durationCell(job)],
      ['idle', job.status === 'running' ? idleCell(job) : null],
      ['activity', job.status === 'running' && job.progress ? job.progress.lastActivity : null],
      ['tool calls', n.tools],
      ['tokens', n.input != null ? `${fmtTokens(n.input)} in · ${fmtTokens(n.output)} out` : '—'],
      ['cost', fmtCost(n.cost)],
      ['retry', job.status === 'waiting_retry' ? until(job.retryAfter) : null],
      ['pauses', job.pauses || null],
      ['failure', job.failureReason ? `${job.failureReason}${job.failureDetail ? `: ${job.failureDetail}` : ''}` : (job.failureDetail || null)],
      ['exit code', job.exitCode],
      ['session', job.sessionId ? h('code', {}, job.sessionId) : null],
      ['inserted by', job.insertedBy ? h('a', { href: jobHref(job.insertedBy), class: 'mono' }, shortId(job.insertedBy)) : null],
      ['reviews', job.reviews && job.reviews.length ? h('span', {}, job.reviews.map((r, i) => [i ? ', ' : '', h('a', { href: jobHref(r), class: 'mono' }, shortId(r))])) : null],
      ['commits', commits ? h('code', {}, `${String(commits.start).slice(0, 8)}..${String(commits.end).slice(0, 8)}`) : null],
    ]);
  }

  function checksTable(checks) {
    return h('div', { class: 'table-wrap' }, h('table', { class: 'grid cards' },
      h('thead', {}, h('tr', {}, ['check', 'verdict', 'tests', 'duration', 'command'].map((t) => h('th', {}, t)))),
      h('tbody', {}, checks.map((c) => [
        h('tr', { class: c.outputTail ? 'has-sub' : '' },
          h('td', { 'data-label': 'check' }, c.name, c.required ? null : h('span', { class: 'tag' }, 'optional')),
          h('td', { 'data-label': 'verdict' }, checkChip(c)),
          h('td', { 'data-label': 'tests' }, c.counts ? `${c.counts.passed} passed, ${c.counts.failed} failed${c.counts.skipped ? `, ${c.counts.skipped} skipped` : ''}` : '—'),
          h('td', { 'data-label': 'duration', class: 'num' }, fmtDur(c.durationMs)),
          h('td', { class: 'wide' }, h('code', {}, c.command))),
        c.outputTail ? h('tr', { class: 'sub' }, h('td', { colspan: 5 }, h('details', {}, h('summary', { class: 'small muted' }, 'output'), h('pre', { class: 'block' }, c.outputTail)))) : null,
      ]))));
  }

  function textCard(title, text, open) {
    return h('section', { class: 'card' }, h('details', Object.assign({ class: 'card-body' }, open ? { open: true } : {}),
      h('summary', {}, h('h2', {}, title)), h('pre', { class: 'block' }, text)));
  }

  class JobView {
    constructor(id) {
      this.id = id;
      this.detail = null;
      this.detailSig = null;
      this.detailError = null;
      this.fetching = false;
      this.retryAt = 0;
      this.stream = null;
      this.streamAttempt = null;
      this.choice = 'latest';
    }

    mount(main) {
      this.title = h('div', { class: 'title-row' });
      this.actions = h('div', { class: 'actions' });
      this.fields = h('div', { class: 'card-body' });
      this.checks = h('div');
      this.texts = h('div');
      this.select = h('select', { 'aria-label': 'Attempt', onchange: () => { this.choice = this.select.value; this.update(); } });
      this.streamState = h('span', { class: 'stream-state' });
      this.summary = h('span', { class: 'muted' });
      this.transcript = new Transcript(this.id);
      this.notice = h('div', { class: 'empty', hidden: true });
      this.events = h('section', { class: 'card', hidden: true },
          h('div', { class: 'card-head' }, h('h2', {}, 'Events'), this.select, this.streamState, h('span', { class: 'spacer' }), this.summary),
          this.notice, this.transcript.wrap);
      main.append(
        h('section', { class: 'card' },
          h('div', { class: 'card-head' }, this.title, h('span', { class: 'spacer' }), this.actions), this.fields),
        this.checks, this.texts, this.events);
    }

    currentJob() {
      const { doc, job } = findJob(this.id);
      if (job) return { doc, job };
      if (this.detail && this.detail.job) return { doc: findDoc(this.detail.job.assignmentId), job: this.detail.job };
      return { doc: null, job: null };
    }

    update() {
      const { doc, job } = this.currentJob();
      const sig = job ? `${job.status}|${job.attempt}|${job.hasResult}|${job.hasContext}` : 'none';
      const due = Date.now() >= this.retryAt;
      if (sig !== this.detailSig && !this.fetching && due && (state.loaded || job)) this.fetchDetail(sig);
      if (!job) {
        patch(this.title, 'none', () => h('h1', {}, 'Job ', h('code', {}, this.id)));
        patch(this.fields, `${this.detailError}|${state.loaded}`, () => h('div', { class: 'muted' }, this.detailError || (state.loaded ? 'Loading…' : 'Waiting for the runner…')));
        setCrumbs([['job', null, this.id]]);
        return;
      }
      this.events.hidden = false;
      setCrumbs([['assignment', assignmentHref(job.assignmentId), job.assignmentId], ['job', null, job.id]]);
      document.title = `wf · ${job.jobType} ${shortId(job.id)}`;
      patch(this.title, job.id, () => h('h1', {}, `Job `, h('code', { title: job.id }, job.id)));
      patch(this.actions, JSON.stringify([job.status, job.cancelRequested]), () => jobActions(job));
      patch(this.fields, JSON.stringify([job, this.detail && this.detail.northStar, !!doc]), () => jobFields(job, doc, this.detail));
      patch(this.checks, JSON.stringify(job.checks || []), () => (job.checks && job.checks.length
        ? h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Verification')), checksTable(job.checks)) : null));
      const d = this.detail;
      patch(this.texts, d ? JSON.stringify([d.prompt, d.context, d.result]) : 'none', () => (d ? [
        d.result ? textCard('Result', d.result, true) : null,
        d.prompt ? textCard('Prompt', d.prompt, false) : null,
        d.context ? textCard('Context', d.context, false) : null,
      ] : null));
      this.updateStream(job);
    }

    fetchDetail(sig) {
      this.fetching = true;
      rpc.call({ op: 'getJob', job: this.id })
        .then((detail) => {
          this.detail = detail;
          this.detailError = null;
          this.detailSig = sig;
        })
        .catch((e) => {
          this.detailError = `${e.message} (${e.kind})`;
          if (e.kind === 'unavailable') {
            this.retryAt = Date.now() + 5000; // the runner is away: ask again later
            setTimeout(scheduleRender, 5100);
          } else {
            this.detailSig = sig;
            if (e.kind !== 'not_found') toastError(e, 'Loading the job');
          }
        })
        .finally(() => {
          this.fetching = false;
          scheduleRender();
        });
    }

    updateStream(job) {
      const latest = job.attempt || 0;
      patch(this.select, `${latest}|${this.choice}`, () => {
        const opts = [h('option', { value: 'latest', selected: this.choice === 'latest' }, latest ? `latest (attempt ${latest})` : 'no attempt yet')];
        for (let a = latest; a >= 1; a--) opts.push(h('option', { value: String(a), selected: this.choice === String(a) }, `attempt ${a}`));
        return opts;
      });
      const want = this.choice === 'latest' ? latest : Number(this.choice);
      this.notice.hidden = want > 0;
      if (!want) {
        this.notice.textContent = job.status === 'pending' ? 'The job has not started yet.' : 'No attempt to show.';
        this.transcript.wrap.hidden = true;
        this.setStreamState('');
        return;
      }
      this.transcript.wrap.hidden = false;
      if (this.streamAttempt === want) return;
      if (this.stream) this.stream.close();
      this.transcript.reset();
      this.streamAttempt = want;
      this.stream = new EventStream(this.id, want, this.transcript, (text, cls, why) => this.setStreamState(text, cls, why));
    }

    setStreamState(text, cls, why) {
      if (text != null) {
        this.streamState.textContent = text;
        this.streamState.className = `stream-state ${cls || ''}`;
        this.streamState.title = why || '';
      }
      const s = this.transcript.summary;
      const u = s.usage;
      const parts = [];
      if (s.model) parts.push(s.model);
      if (s.toolCalls) parts.push(`${s.toolCalls} tool call${s.toolCalls === 1 ? '' : 's'}`);
      if (u) parts.push(`${fmtTokens(u.inputTokens)} in · ${fmtTokens(u.outputTokens)} out · ${fmtCost(u.costUsd)}`);
      this.summary.textContent = parts.join(' · ');
    }

    unmount() {
      if (this.stream) this.stream.close();
      this.stream = null;
    }
  }

  // ------------------------------------------------------------------ routing and rendering

  function setCrumbs(items) {
    const nav = $('#crumbs');
    patch(nav, JSON.stringify(items), () => {
      const out = [h('a', { href: '#/' }, 'assignments')];
      for (const [label, href, id] of items) {
        out.push(h('span', { class: 'sep' }, '/'));
        const text = `${label === 'job' ? 'j' : 'a'}:${shortId(id)}`;
        out.push(href ? h('a', { href, title: id }, text) : h('span', { title: id }, text));
      }
      return out;
    });
  }

  function parseRoute() {
    const hash = location.hash || '#/';
    const [path, query] = hash.slice(1).split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    if (parts[0] === 'a' && parts[1]) return { key: `a/${parts[1]}`, make: () => new AssignmentView(parts[1]) };
    if (parts[0] === 'j' && parts[1]) return { key: `j/${parts[1]}`, make: () => new JobView(parts[1]) };
    const status = new URLSearchParams(query || '').get('status') || 'all';
    return { key: `list/${status}`, make: () => new ListView(status) };
  }

  let view = null;
  let viewKey = null;
  let renderTimer = null;

  function navigate() {
    const route = parseRoute();
    if (route.key === viewKey) return;
    const main = $('#main');
    const wasList = viewKey && viewKey.startsWith('list/') && route.key.startsWith('list/');
    if (view) view.unmount();
    main.replaceChildren();
    viewKey = route.key;
    view = route.make();
    view.mount(main);
    render();
    if (!wasList) window.scrollTo(0, 0);
  }

  function render() {
    clearTimeout(renderTimer);
    renderTimer = null;
    if (view) view.update();
  }

  function scheduleRender() {
    if (renderTimer == null) renderTimer = setTimeout(render, 25);
  }

  window.addEventListener('hashchange', navigate);
  document.body.dataset.ws = 'connecting';
  navigate();
  watcher.start();
})();
