// wasmesh dashboard: the shell. Signing in (a member's email and password, or a
// pasted key), calling the registry's JSON API with the key, hash routes, and the
// refresh loop that re-fetches the current page every 2 s and repaints it in place.
// The pages themselves are in pages.js (WM.pages), charts and formatting in charts.js.
'use strict';

(function () {
  const WM = (window.WM = window.WM || {});
  WM.pages = WM.pages || {};

  /** sessionStorage: the key, and whether signing in made it (then sign-out revokes it). */
  const KEY = 'wasmesh.key';
  const FROM_SIGN_IN = 'wasmesh.key.from-sign-in';
  /** How often the current page is fetched again. */
  const REFRESH_MS = 2000;

  const $ = (id) => document.getElementById(id);

  // --- DOM helpers (text only: never innerHTML) ---------------------------------

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** An element: `attrs` are attributes (`on*` functions become listeners), children text or nodes. */
  WM.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    return append(node, children);
  };

  /** A table cell labelled for the stacked (phone) layout. */
  WM.cell = function (label, ...content) {
    return WM.el('td', { 'data-label': label }, WM.el('div', { class: 'cell' }, ...content));
  };

  /** A table of `rows` (<tr> elements) under `headers`; stacks into cards on narrow screens. */
  WM.table = function (headers, rows, cls) {
    return WM.el(
      'table',
      { class: `stack ${cls || ''}` },
      WM.el('thead', {}, WM.el('tr', {}, headers.map((h) => WM.el('th', { scope: 'col' }, h)))),
      WM.el('tbody', {}, rows),
    );
  };

  /** A small coloured label: kind is ok, warn, bad or info. */
  WM.badge = function (text, kind, attrs) {
    return WM.el('span', Object.assign({ class: `badge ${kind || 'info'}` }, attrs || {}), text);
  };

  /** A titled block of a page. */
  WM.section = function (title, ...content) {
    return WM.el('section', { class: 'block' }, WM.el('h2', {}, title), ...content);
  };

  WM.empty = function (text) {
    return WM.el('p', { class: 'empty' }, text);
  };

  // --- The API -----------------------------------------------------------------

  /** An error answer of the registry: its status, its sentence, its stable code. */
  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code || '';
    }
  }
  WM.ApiError = ApiError;

  /** Thrown when a 401 ended the session: callers stop quietly. */
  class SignedOut extends Error {}
  WM.isSignedOut = (e) => e instanceof SignedOut;

  /** The sentence of an error body: `{"error": "...", "code": "..."}` (or `{"error": {"message"}}`). */
  function errorMessage(status, body) {
    if (body && typeof body === 'object') {
      const e = body.error;
      if (typeof e === 'string' && e) return e;
      if (e && typeof e === 'object' && typeof e.message === 'string') return e.message;
      if (typeof body.message === 'string') return body.message;
    }
    if (typeof body === 'string' && body.trim()) return body.trim().slice(0, 300);
    return `the registry answered HTTP ${status}`;
  }

  async function call(path, options, key) {
    const headers = { Accept: 'application/json' };
    if (key) headers.Authorization = `Bearer ${key}`;
    let body;
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(path, { method: options.method || 'GET', headers, body, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, `cannot reach the registry (${e.message})`, 'network');
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = text;
      }
    }
    if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, data), data && data.code);
    return data;
  }

  /** Calls the registry with the session's key; a 401 signs out and throws SignedOut. */
  WM.api = async function (path, options) {
    const key = sessionStorage.getItem(KEY);
    if (!key) {
      signOut('Sign in to continue.');
      throw new SignedOut('no key');
    }
    try {
      return await call(path, options || {}, key);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        signOut(`You were signed out: ${e.message}`);
        throw new SignedOut(e.message);
      }
      throw e;
    }
  };

  /** Whether the signed-in key has `scope` (admin has every scope). */
  WM.can = (scope) => !!WM.who && (WM.who.scopes.includes(scope) || WM.who.scopes.includes('admin'));
  WM.isAdmin = () => !!WM.who && WM.who.scopes.includes('admin');

  // --- Signing in and out --------------------------------------------------------

  function showSignIn(message) {
    stop();
    for (const id of ['top', 'page', 'banner', 'notice']) $(id).hidden = true;
    $('page').replaceChildren();
    $('page').removeAttribute('data-testid');
    $('sign-in').hidden = false;
    const m = $('sign-in-message');
    m.textContent = message || '';
    m.hidden = !message;
  }

  function signOut(message) {
    const key = sessionStorage.getItem(KEY);
    const madeBySignIn = sessionStorage.getItem(FROM_SIGN_IN) === '1';
    const who = WM.who;
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(FROM_SIGN_IN);
    WM.who = null;
    // A session key made by signing in dies with a sign-out the member chose (best
    // effort); a pasted key is its owner's to keep.
    if (!message && key && madeBySignIn && who) {
      call(`/v1/keys/${encodeURIComponent(who.id)}`, { method: 'DELETE' }, key).catch(() => {});
    }
    showSignIn(message);
  }

  async function begin(key, madeBySignIn) {
    const who = await call('/v1/whoami', {}, key);
    if (!who || !Array.isArray(who.scopes)) throw new ApiError(0, 'the registry sent an unexpected /v1/whoami answer');
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(FROM_SIGN_IN, madeBySignIn ? '1' : '0');
    WM.who = who;
    $('who').textContent = `${who.account} · ${who.scopes.join(', ')}`;
    $('who').title = `key ${who.id}`;
    $('sign-in').hidden = true;
    $('sign-in-message').hidden = true;
    $('top').hidden = false;
    $('page').hidden = false;
    $('password').value = '';
    $('api-key').value = '';
    route();
  }

  async function submitting(form, work) {
    const buttons = form.querySelectorAll('button, input');
    buttons.forEach((b) => (b.disabled = true));
    try {
      await work();
    } catch (e) {
      showSignIn(`Sign-in failed: ${e.message}`);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  function wireSignIn() {
    $('password-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitting(ev.target, async () => {
        const email = $('email').value.trim();
        const password = $('password').value;
        const answer = await call('/v1/sessions', { method: 'POST', body: { email, password, session: true } });
        if (!answer || typeof answer.session_key !== 'string') {
          throw new ApiError(0, 'the registry accepted the password but sent no session key; use an API key instead');
        }
        await begin(answer.session_key, true);
      });
    });
    $('key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitting(ev.target, () => begin($('api-key').value.trim(), false));
    });
    $('sign-out').addEventListener('click', () => signOut());
  }

  // --- Pages and the refresh loop ----------------------------------------------

  let timer = null;
  let generation = 0;
  let current = null; // { name, sig }: the page shown and the data it was drawn from
  const pageState = {}; // per page, kept across refreshes (e.g. the account shown)

  function stop() {
    clearTimeout(timer);
    timer = null;
    generation += 1;
  }

  function routeName() {
    const name = location.hash.replace(/^#\/?/, '').split(/[/?]/)[0];
    return Object.prototype.hasOwnProperty.call(WM.pages, name) ? name : 'nodes';
  }

  function route() {
    if (!WM.who) return;
    stop();
    const name = routeName();
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const main = $('page');
    main.removeAttribute('data-testid');
    main.setAttribute('data-page', name);
    main.replaceChildren(WM.el('p', { class: 'loading' }, 'Loading…'));
    $('banner').hidden = true;
    document.title = `${WM.pages[name].title} · wasmesh`;
    current = { name, sig: null };
    refresh();
  }

  /** Fetches the current page again now (after an action, or a control changed). */
  WM.refreshNow = function () {
    if (WM.who && current) {
      stop();
      refresh();
    }
  };

  function context(name) {
    pageState[name] = pageState[name] || {};
    return { who: WM.who, state: pageState[name], admin: WM.isAdmin(), canDeploy: WM.can('deploy') };
  }

  function stamp(text, failed) {
    const s = $('stamp');
    s.textContent = text;
    s.classList.toggle('failed', !!failed);
  }

  function showBanner(message) {
    const b = $('banner');
    b.textContent = message;
    b.hidden = false;
  }

  /** A short message after an action; errors stay longer. */
  WM.notify = function (text, kind) {
    const n = $('notice');
    n.textContent = text;
    n.className = `notice ${kind || 'ok'}`;
    n.hidden = false;
    clearTimeout(WM.notify.timer);
    WM.notify.timer = setTimeout(() => (n.hidden = true), kind === 'error' ? 15000 : 6000);
  };

  /** Swaps the page's content for `view` in one step, keeping scroll, open details and focus. */
  function paint(view) {
    const main = $('page');
    const open = new Set([...main.querySelectorAll('details[data-key][open]')].map((d) => d.dataset.key));
    const active = document.activeElement;
    const focus = active && main.contains(active) ? active.getAttribute('data-focus') : null;
    for (const d of view.querySelectorAll('details[data-key]')) d.open = open.has(d.dataset.key);
    const [x, y] = [window.scrollX, window.scrollY];
    main.replaceChildren(view);
    if (focus) {
      const again = main.querySelector(`[data-focus="${CSS.escape(focus)}"]`);
      if (again) again.focus({ preventScroll: true });
    }
    window.scrollTo(x, y);
  }

  async function refresh() {
    const mine = ++generation;
    const shown = current;
    if (document.hidden && shown.sig !== null) return schedule(mine);
    const page = WM.pages[shown.name];
    const ctx = context(shown.name);
    try {
      const data = await page.load(ctx);
      if (mine !== generation) return;
      $('banner').hidden = true;
      const sig = JSON.stringify(data);
      if (sig !== shown.sig) {
        const view = document.createDocumentFragment();
        view.appendChild(page.render(data, ctx));
        paint(view);
        shown.sig = sig;
      }
      $('page').setAttribute('data-testid', 'loaded');
      stamp(`updated ${WM.clock()}`);
    } catch (e) {
      if (e instanceof SignedOut || mine !== generation) return;
      showBanner(`Could not load ${page.title.toLowerCase()}: ${e.message}`);
      stamp(`update failed ${WM.clock()}`, true);
      if (shown.sig === null) $('page').replaceChildren();
    }
    schedule(mine);
  }

  function schedule(mine) {
    if (mine === generation) timer = setTimeout(refresh, REFRESH_MS);
  }

  /** Runs an action from a button (disabled meanwhile), says how it went, then refreshes. */
  WM.act = async function (button, work, done) {
    button.disabled = true;
    try {
      await work();
      WM.notify(done);
    } catch (e) {
      if (e instanceof SignedOut) return;
      WM.notify(e.message, 'error');
      button.disabled = false;
    }
    WM.refreshNow();
  };

  function start() {
    wireSignIn();
    window.addEventListener('hashchange', route);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) WM.refreshNow();
    });
    const key = sessionStorage.getItem(KEY);
    if (!key) return showSignIn();
    begin(key, sessionStorage.getItem(FROM_SIGN_IN) === '1').catch((e) => {
      if (e.status === 401) {
        sessionStorage.removeItem(KEY);
        sessionStorage.removeItem(FROM_SIGN_IN);
        showSignIn(`Your session ended (${e.message}). Sign in again.`);
      } else {
        showSignIn(`Could not check your key: ${e.message}`);
      }
    });
  }

  document.addEventListener('DOMContentLoaded', start);
})();
