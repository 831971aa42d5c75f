// wasmesh dashboard: the pages. Each has `load(ctx)` (API calls, returns plain JSON
// data) and `render(data, ctx)` (returns a DOM node); app.js runs them every 2 s and
// repaints only when the data changed. What a key may see is the registry's decision:
// nothing here filters for security.
'use strict';

(function () {
  const WM = window.WM;
  const el = WM.el;
  const cell = WM.cell;
  const enc = encodeURIComponent;

  /** Resolves to {ok: value} or {error: message}; a sign-out still stops the page. */
  function optional(promise) {
    return promise.then(
      (ok) => ({ ok }),
      (e) => {
        if (WM.isSignedOut(e)) throw e;
        return { error: e.message };
      },
    );
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many || one + 's'}`;
  }

  // --- Nodes -----------------------------------------------------------------------

  const STATUS_KIND = { online: 'ok', not_ready: 'warn', paused: 'warn', offline: 'bad' };

  function modelsOf(node) {
    const hb = node.heartbeat;
    return hb && Array.isArray(hb.models) ? hb.models : [];
  }

  function nodeLabel(node) {
    return node.name || node.node_id;
  }

  /** Why a node gets no traffic (or that it does), in plain words: [kind, sentence]. */
  function whyNoTraffic(node) {
    const hb = node.heartbeat;
    if (node.role === 'router') return ['info', 'a router: it forwards requests to hosts and runs none itself'];
    if (node.status === 'offline') {
      return node.last_seen_ms
        ? ['bad', `offline: no heartbeat for ${WM.span(Date.now() - node.last_seen_ms)}, or the key that registered it was revoked`]
        : ['bad', 'offline: it registered but never sent a heartbeat'];
    }
    if (node.status === 'paused' || (hb && hb.paused)) {
      return ['warn', 'paused by its provider (wasmesh host resume brings it back): it finishes what it runs and takes no new requests'];
    }
    if (!hb) return ['warn', 'no heartbeat yet: routers do not know what it holds'];
    const pressure = hb.pressure || {};
    if (pressure.under_pressure) {
      const swap = Number(pressure.swap_pages_per_s || 0).toFixed(0);
      const faults = Number(pressure.major_faults_per_s || 0).toFixed(0);
      return ['bad', `memory pressure (${swap} swap pages/s, ${faults} major faults/s): not ready until it eases`];
    }
    if (node.status === 'not_ready' || !hb.ready) {
      return ['warn', 'not ready: still starting (loading apps, fetching or loading models)'];
    }
    const max = hb.share ? hb.share.max_concurrency : 0;
    if (max && hb.in_flight >= max) {
      return ['warn', `at capacity: ${hb.in_flight} of ${max} requests in flight, new ones go to other nodes`];
    }
    const models = modelsOf(node);
    if (!models.some((m) => m.state === 'loaded')) {
      const busy = models.filter((m) => m.state === 'fetching' || m.state === 'loading').map((m) => m.name);
      const doing = busy.length ? ` (bringing in ${busy.join(', ')})` : '';
      return ['warn', `no model warm${doing}: it serves apps without models; model requests go to warm nodes first`];
    }
    return ['ok', 'serving: it takes requests, warm models first'];
  }

  function hardware(hb) {
    if (!hb) return el('span', { class: 'muted' }, 'unknown (no heartbeat)');
    const h = hb.hardware || {};
    const share = hb.share || {};
    return [
      el('div', {}, `${h.cpu_model || 'CPU'} · ${plural(h.cpu_cores || 0, 'core')} · ${WM.bytes(h.memory_bytes)}`),
      (h.gpus || []).map((g) => el('div', {}, `${g.vendor} ${g.name}${g.memory_bytes ? ' · ' + WM.bytes(g.memory_bytes) : ''}`)),
      el('div', { class: 'muted' }, `${h.os || '?'}/${h.arch || '?'} · for models ${WM.bytes(share.model_memory_bytes)}`),
      hb.version ? el('div', { class: 'muted' }, `wasmesh ${hb.version}`) : null,
    ];
  }

  function chip(name, attrs, note) {
    return el('span', Object.assign({ class: 'chip', 'data-model': name }, attrs || {}), name, note ? el('small', {}, note) : null);
  }

  function nodeModels(node) {
    const models = modelsOf(node);
    const warm = models.filter((m) => m.state === 'loaded');
    const named = (state) => models.filter((m) => m.state === state).map((m) => m.name);
    return [
      el(
        'div',
        { class: 'chips', 'data-testid': 'node-models' },
        warm.length ? warm.map((m) => chip(m.name, {}, m.pinned ? ' pinned' : '')) : el('span', { class: 'muted' }, 'none warm'),
      ),
      named('loading').length ? el('div', { class: 'muted' }, `loading: ${named('loading').join(', ')}`) : null,
      named('on_disk').length ? el('div', { class: 'muted' }, `on disk: ${named('on_disk').join(', ')}`) : null,
      models
        .filter((m) => m.state === 'fetching')
        .map((m) => {
          const [done, total] = Array.isArray(m.fetched) ? m.fetched : [0, 0];
          const pct = total ? Math.floor((100 * done) / total) : 0;
          return el(
            'div',
            { class: 'fetch muted', 'data-testid': 'node-fetch', 'data-model': m.name },
            `fetching ${m.name}`,
            total ? el('progress', { max: total, value: done }) : null,
            total ? ` ${pct}% of ${WM.bytes(total)}` : ' (size not known yet)',
          );
        }),
    ];
  }

  function nodeLoad(node) {
    const hb = node.heartbeat;
    if (!hb) return '—';
    const max = (hb.share && hb.share.max_concurrency) || 0;
    return [
      el('span', { 'data-testid': 'node-load' }, `${hb.in_flight} / ${max} in flight`),
      max ? el('meter', { min: 0, max, value: Math.min(hb.in_flight, max), high: Math.max(1, max - 1) }) : null,
    ];
  }

  function nodeRow(node) {
    const [kind, why] = whyNoTraffic(node);
    const status = node.status === 'not_ready' ? 'not ready' : String(node.status);
    return el(
      'tr',
      { 'data-testid': 'node', 'data-node-id': node.node_id },
      cell(
        'Node',
        el('strong', {}, nodeLabel(node)),
        node.role === 'router' ? WM.badge('router', 'info') : null,
        el('div', { class: 'id' }, node.node_id),
        el('div', { class: 'muted' }, `last heartbeat ${WM.ago(node.last_seen_ms)}`),
      ),
      cell('Status', WM.badge(status, STATUS_KIND[node.status] || 'info', { 'data-testid': 'node-status', 'data-status': node.status })),
      cell('Hardware', hardware(node.heartbeat)),
      cell('Models', nodeModels(node)),
      cell('Load', nodeLoad(node)),
      cell(
        'Traffic',
        el('span', { class: `why ${kind}`, 'data-testid': 'node-why' }, why),
        node.peer_reports
          ? el('div', { class: 'why bad' }, `reported ${plural(node.peer_reports, 'time')} for bad weight pieces: no longer given as a peer`)
          : null,
      ),
    );
  }

  WM.pages.nodes = {
    title: 'Nodes',
    load: () => WM.api('/v1/nodes'),
    render(nodes) {
      if (!nodes.length) {
        return WM.empty('No nodes yet. Start one with `wasmesh host --registry URL --key PROVIDER_KEY`.');
      }
      const counts = {};
      for (const n of nodes) counts[n.status] = (counts[n.status] || 0) + 1;
      const summary = Object.entries(counts).map(([s, n]) => `${n} ${s.replace('_', ' ')}`).join(' · ');
      return el(
        'div',
        {},
        el('p', { class: 'summary' }, `${plural(nodes.length, 'node')}: ${summary}`),
        WM.table(['Node', 'Status', 'Hardware', 'Models', 'Load', 'Traffic'], nodes.map(nodeRow), 'nodes'),
      );
    },
  };

  // --- Apps --------------------------------------------------------------------------

  function versionRow(app, v, ctx) {
    const current = v.version === app.current_version;
    const components = Object.entries(v.components || {});
    return el(
      'tr',
      { 'data-testid': 'version', 'data-version': v.version, class: current ? 'current' : null },
      cell('Version', el('strong', {}, `v${v.version}`), current ? WM.badge('current', 'ok') : null),
      cell('Deployed', WM.when(v.created_at_ms), el('div', { class: 'muted' }, WM.ago(v.created_at_ms))),
      cell('By key', el('code', {}, v.deployed_by)),
      cell(
        'Components',
        components.map(([name, hash]) => el('div', { title: hash }, `${name} `, el('code', {}, String(hash).slice(0, 12)))),
      ),
      cell(
        'Manifest',
        el('details', { 'data-key': `manifest:${app.name}:${v.version}` }, el('summary', {}, 'wasmesh.toml'), el('pre', {}, v.manifest)),
      ),
      cell(
        'Action',
        !current && ctx.canDeploy
          ? el(
              'button',
              {
                type: 'button',
                'data-testid': 'rollback',
                'data-version': v.version,
                onclick: (ev) =>
                  WM.act(
                    ev.currentTarget,
                    () => WM.api(`/v1/apps/${enc(app.name)}/rollback`, { method: 'POST', body: { version: v.version } }),
                    `${app.name}: v${v.version} is current again`,
                  ),
              },
              `Roll back to v${v.version}`,
            )
          : el('span', { class: 'muted' }, current ? 'serving now' : 'rollback needs the deploy scope'),
      ),
    );
  }

  function appCard(app, versions, ctx) {
    const list = Array.isArray(versions) ? versions.slice().sort((a, b) => b.version - a.version) : [];
    return el(
      'section',
      { class: 'block app', 'data-testid': 'app', 'data-app': app.name },
      el(
        'div',
        { class: 'app-head' },
        el('h2', {}, app.name),
        el(
          'span',
          {},
          'current ',
          el('strong', { 'data-testid': 'app-current', 'data-version': app.current_version }, `v${app.current_version}`),
          ` of ${app.versions}`,
        ),
        app.current_version !== app.versions ? WM.badge('rolled back', 'warn') : null,
        ctx.admin || app.account !== ctx.who.account ? WM.badge(`account ${app.account}`, 'info') : null,
        el('span', { class: 'muted' }, `current since ${WM.when(app.updated_at_ms)} · served under /fn/${app.name}/`),
      ),
      versions && versions.error
        ? el('p', { class: 'why bad' }, `Versions unavailable: ${versions.error}`)
        : WM.table(['Version', 'Deployed', 'By key', 'Components', 'Manifest', 'Action'], list.map((v) => versionRow(app, v, ctx)), 'versions'),
    );
  }

  WM.pages.apps = {
    title: 'Apps',
    async load(ctx) {
      const apps = await WM.api('/v1/apps');
      // Versions never change once made: fetch an app's list again only when it grew.
      const cache = (ctx.state.versions = ctx.state.versions || {});
      const versions = {};
      await Promise.all(
        apps.map(async (app) => {
          const hit = cache[app.name];
          if (hit && hit.count === app.versions) {
            versions[app.name] = hit.list;
            return;
          }
          const got = await optional(WM.api(`/v1/apps/${enc(app.name)}/versions`));
          if (got.ok) cache[app.name] = { count: app.versions, list: got.ok };
          versions[app.name] = got.ok || { error: got.error };
        }),
      );
      return { apps, versions };
    },
    render(data, ctx) {
      if (!data.apps.length) return WM.empty('No apps yet. Deploy one with `wasmesh deploy`.');
      return el('div', { class: 'apps' }, data.apps.map((app) => appCard(app, data.versions[app.name], ctx)));
    },
  };

  // --- Models ------------------------------------------------------------------------

  /** Where each model (or MODEL:ADAPTER) stands on the nodes: name -> state -> [node]. */
  function placement(nodes) {
    const where = {};
    for (const node of nodes || []) {
      for (const m of modelsOf(node)) {
        where[m.name] = where[m.name] || {};
        (where[m.name][m.state] = where[m.name][m.state] || []).push(nodeLabel(node));
      }
    }
    return (name, state) => (where[name] && where[name][state]) || [];
  }

  function nodeChips(names) {
    return names.length
      ? el('div', { class: 'chips' }, names.map((n) => el('span', { class: 'chip' }, n)))
      : el('span', { class: 'muted' }, 'none');
  }

  function elsewhere(on, name) {
    return [
      ['loading', 'loading'],
      ['on_disk', 'on disk'],
      ['fetching', 'fetching'],
    ]
      .filter(([state]) => on(name, state).length)
      .map(([state, words]) => el('div', { class: 'muted' }, `${words}: ${on(name, state).join(', ')}`));
  }

  function visibility(item, ctx) {
    return [
      WM.badge(item.public ? 'public' : 'private', item.public ? 'ok' : 'info'),
      ctx.admin || item.account !== ctx.who.account ? el('div', { class: 'muted' }, `account ${item.account}`) : null,
    ];
  }

  function modelRow(m, on, ctx) {
    const f = m.facts || {};
    const warm = on(m.name, 'loaded');
    return el(
      'tr',
      { 'data-testid': 'model', 'data-model': m.name },
      cell('Model', el('strong', {}, m.name), el('div', { class: 'id', title: m.blake3 }, String(m.blake3).slice(0, 16))),
      cell('Visibility', visibility(m, ctx)),
      cell('Size', WM.bytes(m.size)),
      cell(
        'Details',
        `${f.architecture || '?'} · ${WM.params(f.parameters)} · ${f.quantization || '?'}`,
        f.context_length ? el('div', { class: 'muted' }, `context ${f.context_length}`) : null,
      ),
      cell(
        'Kept warm',
        m.min_warm
          ? [`on ${plural(m.min_warm, 'node')} `, warm.length < m.min_warm ? WM.badge(`${warm.length} now`, 'warn') : null]
          : el('span', { class: 'muted' }, 'not pinned'),
      ),
      cell('Warm on', el('div', { 'data-testid': 'model-warm' }, nodeChips(warm)), elsewhere(on, m.name)),
    );
  }

  function loraRow(l, on, ctx) {
    const full = `${l.base}:${l.name}`;
    return el(
      'tr',
      { 'data-testid': 'lora', 'data-lora': l.name },
      cell('Adapter', el('strong', {}, l.name), el('div', { class: 'muted' }, `for ${l.base}`)),
      cell('Visibility', visibility(l, ctx)),
      cell('Size', WM.bytes(l.size)),
      cell('Rank', String(l.rank)),
      cell('Attached on', nodeChips(on(full, 'loaded')), elsewhere(on, full)),
    );
  }

  WM.pages.models = {
    title: 'Models',
    async load() {
      const [models, loras, nodes] = await Promise.all([
        WM.api('/v1/models'),
        WM.api('/v1/loras'),
        optional(WM.api('/v1/nodes')),
      ]);
      return { models, loras, nodes };
    },
    render(data, ctx) {
      const on = placement(data.nodes.ok);
      return el(
        'div',
        {},
        data.nodes.error ? el('p', { class: 'why warn' }, `Where models are warm is unknown: ${data.nodes.error}`) : null,
        WM.section(
          'Models',
          data.models.length
            ? WM.table(['Model', 'Visibility', 'Size', 'Details', 'Kept warm', 'Warm on'], data.models.map((m) => modelRow(m, on, ctx)), 'models')
            : WM.empty('No models yet. Push one with `wasmesh models push FILE --name NAME`.'),
        ),
        WM.section(
          'LoRA adapters',
          data.loras.length
            ? WM.table(['Adapter', 'Visibility', 'Size', 'Rank', 'Attached on'], data.loras.map((l) => loraRow(l, on, ctx)), 'loras')
            : WM.empty('No adapters yet. Push one with `wasmesh loras push FILE --base MODEL --name NAME`.'),
        ),
      );
    },
  };

  // --- Usage & credits -----------------------------------------------------------

  const DAY_MS = 86400000;
  /** Days the charts over time show. */
  const CHART_DAYS = 30;

  /** [{label: "YYYY-MM-DD", value}] with the days between the first and last filled with 0. */
  function everyDay(points) {
    points = points.slice().sort((a, b) => (a.label < b.label ? -1 : 1));
    if (!points.length) return [];
    const last = Date.parse(`${points[points.length - 1].label}T00:00:00Z`);
    if (Number.isNaN(last)) return points;
    const by = new Map(points.map((p) => [p.label, p.value]));
    const out = [];
    for (let i = CHART_DAYS - 1; i >= 0; i--) {
      const day = WM.utcDay(last - i * DAY_MS);
      if (day >= points[0].label) out.push({ label: day, value: by.has(day) ? by.get(day) : 0 });
    }
    return out;
  }

  /** What `account` earned as a provider per UTC day, from its history (exact sums). */
  function earningsByDay(history, account) {
    const sums = new Map();
    for (const e of history) {
      if (e.code !== 'earning' || e.credit !== account || e.phase !== 'pending') continue;
      const day = WM.utcDay(e.at_ms);
      sums.set(day, (sums.get(day) || 0n) + BigInt(e.amount));
    }
    return everyDay([...sums].map(([label, sum]) => ({ label, value: sum.toString() })));
  }

  function figure(label, micros, id, note) {
    return el(
      'div',
      { class: 'figure', 'data-testid': id },
      el('div', { class: 'figure-label' }, label),
      el('div', { class: 'figure-value' }, WM.credits(micros)),
      note ? el('div', { class: 'muted' }, note) : null,
    );
  }

  function balanceFigures(b) {
    return el(
      'div',
      { class: 'figures' },
      figure('Available', b.available, 'balance-available', 'credits requests may spend now'),
      figure('Held', b.reserved, 'balance-held', 'for requests in flight'),
      figure('Earnings in escrow', b.pending_earnings, 'balance-escrow', 'paid once the settlement window passes'),
      figure('Credited in all', b.credits_posted, 'balance-credited', 'grants and settled earnings'),
      figure('Spent in all', b.debits_posted, 'balance-spent'),
    );
  }

  function usageTable(rows, what) {
    return el(
      'details',
      { 'data-key': `table:${what}` },
      el('summary', {}, 'as a table'),
      WM.table(
        [what, 'Requests', 'Tokens in', 'Tokens out', 'Spent'],
        rows.map((r) =>
          el(
            'tr',
            {},
            cell(what, r.key),
            cell('Requests', String(r.requests)),
            cell('Tokens in', String(r.input_tokens)),
            cell('Tokens out', String(r.output_tokens)),
            cell('Spent', WM.credits(r.cost)),
          ),
        ),
        'usage',
      ),
    );
  }

  function spendBlock(title, rows, what) {
    if (!rows.length) return WM.section(title, WM.empty('Nothing spent yet.'));
    const chart =
      what === 'Day'
        ? WM.dayChart(everyDay(rows.map((r) => ({ label: r.key, value: r.cost }))), WM.credits, title)
        : WM.barChart(rows.map((r) => ({ label: r.key, value: r.cost })), WM.credits, title);
    return WM.section(title, chart, usageTable(rows, what));
  }

  function transferRow(e, account) {
    const incoming = e.credit === account;
    return el(
      'tr',
      { 'data-testid': 'transfer' },
      cell('When', WM.when(e.at_ms)),
      cell('What', e.code, el('div', { class: 'muted' }, e.phase)),
      cell('Amount', el('span', { class: incoming ? 'plus' : 'minus' }, `${incoming ? '+' : '−'}${WM.credits(e.amount)}`)),
      cell('With', incoming ? e.debit : e.credit),
      cell('Reference', el('code', {}, e.reference || '—')),
    );
  }

  function accountPicker(data, ctx) {
    const names = data.accounts && data.accounts.ok ? data.accounts.ok.map((a) => a.name) : [];
    if (!names.length) return el('p', { class: 'summary' }, `Account ${data.account}`);
    if (!names.includes(data.account)) names.unshift(data.account);
    const select = el(
      'select',
      {
        'data-focus': 'account',
        'data-testid': 'account',
        onchange: (ev) => {
          ctx.state.account = ev.target.value;
          WM.refreshNow();
        },
      },
      names.map((n) => el('option', { value: n, selected: n === data.account }, n)),
    );
    return el('label', { class: 'summary picker' }, 'Account ', select);
  }

  WM.pages.usage = {
    title: 'Usage & credits',
    async load(ctx) {
      const account = ctx.state.account || ctx.who.account;
      const a = enc(account);
      const [accounts, balance, history, byDay, byApp, byModel] = await Promise.all([
        ctx.admin ? optional(WM.api('/v1/accounts')) : null,
        WM.api(`/v1/credits/${a}`),
        WM.api(`/v1/credits/${a}/history?limit=100`),
        WM.api(`/v1/usage?account=${a}&by=day`),
        WM.api(`/v1/usage?account=${a}&by=app`),
        WM.api(`/v1/usage?account=${a}&by=model`),
      ]);
      return { account, accounts, balance, history, byDay, byApp, byModel };
    },
    render(data, ctx) {
      const earnings = earningsByDay(data.history, data.account);
      return el(
        'div',
        {},
        accountPicker(data, ctx),
        WM.section('Balance (credits)', balanceFigures(data.balance)),
        el(
          'div',
          { class: 'grid' },
          spendBlock('Spend per day (UTC)', data.byDay, 'Day'),
          spendBlock('Spend by app', data.byApp, 'App'),
          spendBlock('Spend by model', data.byModel, 'Model'),
          WM.section(
            'Provider earnings per day',
            earnings.length
              ? WM.dayChart(earnings, WM.credits, 'Provider earnings per day')
              : WM.empty('No earnings in the last 100 transfers.'),
            el('p', { class: 'muted' }, `In escrow now: ${WM.credits(data.balance.pending_earnings)} credits.`),
          ),
        ),
        WM.section(
          'Recent transfers',
          data.history.length
            ? WM.table(['When', 'What', 'Amount', 'With', 'Reference'], data.history.slice(0, 20).map((e) => transferRow(e, data.account)), 'transfers')
            : WM.empty('No transfers yet.'),
        ),
      );
    },
  };
})();
