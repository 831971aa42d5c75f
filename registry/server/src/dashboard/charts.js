// wasmesh dashboard: formatting (credits, bytes, times) and inline SVG bar charts.
// Loaded first; everything hangs off the global `WM`. No innerHTML anywhere: every
// string reaches the DOM through textContent or an attribute.
'use strict';

(function () {
  const WM = (window.WM = window.WM || {});
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const MICROS = 1000000n;

  // --- Numbers and text -------------------------------------------------------

  /** "1234567" -> "1,234,567" (digits only). */
  function groupDigits(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }

  /**
   * Micro-credits (an integer on the wire) as credits with 6 decimals: 12500000 ->
   * "12.500000". Integer arithmetic (BigInt), never a float division.
   */
  WM.credits = function (micros) {
    let n;
    try {
      n = BigInt(typeof micros === 'number' ? Math.trunc(micros) : String(micros ?? 0));
    } catch (_) {
      return '?';
    }
    const negative = n < 0n;
    if (negative) n = -n;
    const whole = groupDigits((n / MICROS).toString());
    const fraction = (n % MICROS).toString().padStart(6, '0');
    return (negative ? '-' : '') + whole + '.' + fraction;
  };

  /** Bytes for people: "512 B", "1.5 KiB", "135.2 MiB", "16.0 GiB". */
  WM.bytes = function (n) {
    n = Number(n) || 0;
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  };

  /** A count of weights: 134515008 -> "135M". */
  WM.params = function (n) {
    n = Number(n) || 0;
    if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
    if (n >= 1e6) return `${Math.round(n / 1e6)}M`;
    if (n >= 1e3) return `${Math.round(n / 1e3)}K`;
    return String(n);
  };

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  /** Local wall-clock time, HH:MM:SS. */
  WM.clock = function (date) {
    const d = date || new Date();
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };

  /** Unix ms as a local date and time, "2025-03-01 14:02:11". */
  WM.when = function (ms) {
    if (!ms) return 'never';
    const d = new Date(Number(ms));
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${WM.clock(d)}`;
  };

  /** A duration in ms as "4 s", "3 min", "2 h", "5 d". */
  WM.span = function (ms) {
    const s = Math.max(0, Math.round(Number(ms) / 1000));
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} d`;
  };

  /** Unix ms as "4 s ago" (relative to now). */
  WM.ago = function (ms) {
    return ms ? `${WM.span(Date.now() - Number(ms))} ago` : 'never';
  };

  /** The UTC day of Unix ms, "YYYY-MM-DD" (as the registry groups usage by day). */
  WM.utcDay = function (ms) {
    return new Date(Number(ms)).toISOString().slice(0, 10);
  };

  // --- SVG --------------------------------------------------------------------

  /** An SVG element with attributes and children (strings become text nodes). */
  WM.svg = function (tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  };

  function shorten(text, max) {
    return text.length > max ? text.slice(0, max - 1) + '…' : text;
  }

  /** The largest value of rows as a Number (for scaling only; labels use `format`). */
  function largest(rows) {
    return rows.reduce((m, r) => Math.max(m, Number(r.value) || 0), 0) || 1;
  }

  /**
   * Horizontal bars, one row per item: `rows` is [{label, value}], `format` turns a
   * value into its label. For categories (apps, models).
   */
  WM.barChart = function (rows, format, title) {
    const W = 420;
    const ROW = 22;
    const LABEL = 130;
    const BAR = 180;
    const max = largest(rows);
    const height = rows.length * ROW + 4;
    const svg = WM.svg('svg', {
      class: 'chart bars',
      viewBox: `0 0 ${W} ${height}`,
      role: 'img',
      'aria-label': title,
      preserveAspectRatio: 'xMinYMin meet',
    });
    rows.forEach((row, i) => {
      const y = i * ROW + 2;
      const width = Math.max(1, Math.round((BAR * (Number(row.value) || 0)) / max));
      const value = format(row.value);
      svg.appendChild(
        WM.svg(
          'g',
          { class: 'bar' },
          WM.svg('title', {}, `${row.label}: ${value}`),
          WM.svg('text', { x: 0, y: y + 15, class: 'label' }, shorten(String(row.label), 20)),
          WM.svg('rect', { x: LABEL, y: y + 3, width, height: ROW - 8, rx: 2 }),
          WM.svg('text', { x: LABEL + width + 6, y: y + 15, class: 'value' }, value),
        ),
      );
    });
    return svg;
  };

  /**
   * Vertical bars over days: `rows` is [{label: "YYYY-MM-DD", value}] in date order;
   * the last `days` are drawn, the largest value is written at the top.
   */
  WM.dayChart = function (rows, format, title, days) {
    rows = rows.slice(-(days || 30));
    const W = 420;
    const H = 150;
    const TOP = 18;
    const BOTTOM = 22;
    const max = largest(rows);
    const step = (W - 8) / Math.max(rows.length, 1);
    const every = Math.ceil(rows.length / 6);
    const svg = WM.svg('svg', {
      class: 'chart days',
      viewBox: `0 0 ${W} ${H}`,
      role: 'img',
      'aria-label': title,
      preserveAspectRatio: 'xMinYMin meet',
    });
    const maxLabel = rows.reduce((best, r) => (Number(r.value) > Number(best.value) ? r : best), rows[0]);
    svg.appendChild(WM.svg('text', { x: 4, y: 12, class: 'value' }, `max ${format(maxLabel ? maxLabel.value : 0)}`));
    svg.appendChild(WM.svg('line', { x1: 4, x2: W - 4, y1: H - BOTTOM, y2: H - BOTTOM, class: 'axis' }));
    rows.forEach((row, i) => {
      const h = Math.max(1, Math.round(((H - TOP - BOTTOM) * (Number(row.value) || 0)) / max));
      const x = 4 + i * step;
      const g = WM.svg(
        'g',
        { class: 'bar' },
        WM.svg('title', {}, `${row.label}: ${format(row.value)}`),
        WM.svg('rect', { x: x + step * 0.15, y: H - BOTTOM - h, width: Math.max(1, step * 0.7), height: h, rx: 1 }),
      );
      if (i % every === 0 || (i === rows.length - 1 && i % every >= every / 2)) {
        g.appendChild(
          WM.svg('text', { x: x + step / 2, y: H - 6, class: 'label', 'text-anchor': 'middle' }, row.label.slice(5)),
        );
      }
      svg.appendChild(g);
    });
    return svg;
  };
})();
