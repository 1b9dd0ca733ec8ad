// The parts every page is made of: the view's controls, headline cards, charts, tables and the states
// a panel can be in (loading, failed, empty).
import uPlot from "uplot";
import * as fmt from "./format.js";
import { html, useEffect, useRef, useState } from "./lib.js";
import { splitSeries, useHeadline } from "./data.js";
import { DIMENSIONS, GRANULARITIES, PRESETS, period, setParams } from "./route.js";

export const PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

// -- states ---------------------------------------------------------------------------------------------

export const Loading = ({ label = "Loading" }) => html`<p class="state loading" role="status">${label}…</p>`;

export function Failed({ error }) {
  const hint = error.status === 403 ? "This key may not have the scope this panel needs (ask for a read key with it)."
    : error.status === 0 ? "" : "Change the view, or try again.";
  return html`<div class="state failed" role="alert"><strong>${error.message}</strong>
    ${error.code ? html` <code>${error.code}</code>` : ""}<p>${hint}</p></div>`;
}

export function Empty({ what = "data", children }) {
  return html`<div class="state empty"><p><strong>No ${what} in this period yet.</strong> Widen the time range, or
    send events: point a Segment or RudderStack SDK at the ingest address with the write key, or</p>
    <pre>curl -u WRITE_KEY: ${location.origin}/v1/track -H 'Content-Type: application/json' \\
  -d '{"userId": "42", "event": "Order Completed", "properties": {"revenue": 25, "currency": "EUR"}}'</pre>
    ${children}</div>`;
}

/** Renders `children(data)` once `result` (useQuery) holds data; the loading, failed and empty states otherwise. */
export function Panel({ result, empty, what, children }) {
  if (result.error) return html`<${Failed} error=${result.error} />`;
  if (!result.data) return html`<${Loading} />`;
  if (empty && empty(result.data)) return html`<${Empty} what=${what} />`;
  return html`<div class=${result.loading ? "panel-body refreshing" : "panel-body"}>${children(result.data)}</div>`;
}

export const Section = ({ title, id, children, actions }) => html`
  <section class="card" aria-labelledby=${id}>
    <header><h2 id=${id}>${title}</h2>${actions}</header>${children}</section>`;

// -- the view's controls --------------------------------------------------------------------------------

/** Time range (presets and custom), granularity, breakdown and filters, all kept in the URL. */
export function Controls({ params, dimensions = DIMENSIONS, by = true, granularity = true, filters = true }) {
  const { from, to } = period(params);
  const day = (d) => d.toISOString().slice(0, 10);
  const custom = params.range === "custom";
  const [filterDim, setFilterDim] = useState(dimensions[0]);
  const [filterValue, setFilterValue] = useState("");
  const active = dimensions.filter((d) => params[d]);
  return html`<form class="controls" aria-label="View" onSubmit=${(e) => e.preventDefault()}>
    <label>Range <select name="range" value=${params.range || "30d"}
        onChange=${(e) => setParams(e.target.value === "custom"
          ? { range: "custom", from: day(from), to: day(to) } : { range: e.target.value, from: null, to: null })}>
      ${PRESETS.map(([key, label]) => html`<option value=${key}>${label}</option>`)}
      <option value="custom">Custom…</option></select></label>
    ${custom && html`
      <label>From <input type="date" name="from" value=${params.from} onChange=${(e) => setParams({ from: e.target.value })} /></label>
      <label>To <input type="date" name="to" value=${params.to} onChange=${(e) => setParams({ to: e.target.value })} /></label>`}
    ${granularity && html`<label>Granularity <select name="granularity" value=${params.granularity || ""}
        onChange=${(e) => setParams({ granularity: e.target.value || null })}>
      <option value="">Auto</option>${GRANULARITIES.map((g) => html`<option value=${g}>${g}</option>`)}</select></label>`}
    ${by && dimensions.length > 0 && html`<label>Break down by <select name="by" value=${params.by || ""}
        onChange=${(e) => setParams({ by: e.target.value || null })}>
      <option value="">Nothing</option>${dimensions.map((d) => html`<option value=${d}>${d}</option>`)}</select></label>`}
    ${filters && dimensions.length > 0 && html`<fieldset class="filters"><legend>Filters</legend>
      ${active.map((d) => html`<button type="button" class="chip" aria-label=${`Remove filter ${d} = ${params[d]}`}
          onClick=${() => setParams({ [d]: null })}>${d} = ${params[d]} ×</button>`)}
      <select aria-label="Filter dimension" value=${filterDim} onChange=${(e) => setFilterDim(e.target.value)}>
        ${dimensions.map((d) => html`<option value=${d}>${d}</option>`)}</select>
      <input aria-label="Filter value" placeholder="value" value=${filterValue}
        onInput=${(e) => setFilterValue(e.target.value)}
        onKeyDown=${(e) => { if (e.key === "Enter" && filterValue) { setParams({ [filterDim]: filterValue }); setFilterValue(""); } }} />
      <button type="button" disabled=${!filterValue}
        onClick=${() => { setParams({ [filterDim]: filterValue }); setFilterValue(""); }}>Add filter</button>
    </fieldset>`}
    <p class="period muted small" data-testid="period" data-from=${from.toISOString()} data-to=${to.toISOString()}>
      ${fmt.dateTime(from.toISOString())} – ${fmt.dateTime(to.toISOString())} (UTC periods)</p>
  </form>`;
}

// -- headline cards -------------------------------------------------------------------------------------

// KPIs where a rise is bad news: their change is coloured the other way round.
const LOWER_IS_BETTER = new Set(["first_response_time", "resolution_time", "open_ticket_backlog",
  "complaints_per_1000_customers", "churn_rate", "customer_acquisition_cost", "average_sales_cycle"]);

function byCurrency(rows) {
  const out = new Map();
  for (const row of rows || []) out.set(row.currency || "", row);
  return out;
}

/** A KPI over the period, its change against the previous period and a sparkline; one line per currency. */
export function KpiCard({ name, title, unit, params, dimensions }) {
  const result = useHeadline(name, params, dimensions);
  const body = () => {
    const { now, previous, series } = result.data;
    if (!now.length) return html`<p class="value muted">–</p><p class="muted small">no data in the period</p>`;
    const before = byCurrency(previous);
    return html`${now.map((row) => {
      const prev = before.get(row.currency || "");
      const delta = fmt.change(row.value, prev ? prev.value : null);
      const points = series.filter((r) => (r.currency || "") === (row.currency || "")).map((r) => r.value);
      return html`<div class="headline" data-currency=${row.currency || ""}>
        <p class="value" data-kpi=${name} data-value=${row.value}>${fmt.value(row.value, unit, row.currency)}</p>
        <p class=${`delta ${delta === null || delta === 0 ? "" : (delta > 0) !== LOWER_IS_BETTER.has(name) ? "up" : "down"}`}>
          ${delta === null ? "no previous period" : `${delta >= 0 ? "▲" : "▼"} ${fmt.percent(Math.abs(delta))} vs previous`}</p>
        <${Sparkline} values=${points} label=${`${title} over the period`} /></div>`;
    })}`;
  };
  return html`<article class="kpi-card" data-testid=${`card-${name}`} aria-labelledby=${`card-${name}-title`}>
    <h3 id=${`card-${name}-title`}>${title}</h3>
    ${result.error ? html`<${Failed} error=${result.error} />` : result.data ? body() : html`<${Loading} />`}
  </article>`;
}

export function Sparkline({ values, label, width = 120, height = 28 }) {
  const numbers = values.filter((v) => v !== null && v !== undefined);
  if (numbers.length < 2) return html`<svg class="spark" width=${width} height=${height} role="img" aria-label=${label}></svg>`;
  const lo = Math.min(...numbers), hi = Math.max(...numbers), span = hi - lo || 1;
  const step = width / (values.length - 1);
  const path = values.map((v, i) => (v === null || v === undefined ? null
    : `${i * step},${height - 2 - ((v - lo) / span) * (height - 4)}`)).filter(Boolean).join(" ");
  return html`<svg class="spark" width=${width} height=${height} viewBox=${`0 0 ${width} ${height}`} role="img"
    aria-label=${label}><polyline points=${path} fill="none" stroke="currentColor" stroke-width="1.5" /></svg>`;
}

// -- charts -------------------------------------------------------------------------------------------

const epoch = (period) => Date.parse(`${period}T00:00:00Z`) / 1000;

/** A KPI answer over time as lines (or bars), one series per dimension value and currency, with its table. */
export function TimeChart({ answer, title, bars = false, height = 240 }) {
  const { series: rows, by, unit, granularity } = answer;
  const split = splitSeries(rows, by, title);
  const xs = [...new Set(rows.map((r) => r.period))].sort();
  const data = [xs.map(epoch), ...split.map((s) => {
    const at = new Map(s.rows.map((r) => [r.period, r.value]));
    return xs.map((x) => (at.has(x) ? at.get(x) : null));
  })];
  const ref = useRef(null);
  useEffect(() => {
    if (!ref.current || !xs.length) return undefined;
    const element = ref.current;
    const step = { day: 86400, week: 7 * 86400, month: 30 * 86400 }[granularity] || 86400;
    const options = {
      width: Math.max(element.clientWidth, 280), height,
      scales: {
        // One period alone would stretch the axis over years: half a period either side instead.
        x: { time: true, range: (u, lo, hi) => (lo === hi ? [lo - step / 2, hi + step / 2] : [lo, hi]) },
        // Counts and money from zero, so bars and lines compare by length.
        y: { range: (u, lo, hi) => [Math.min(0, lo ?? 0), hi > 0 ? hi * 1.05 : 1] },
      },
      axes: [{}, { values: (_, ticks) => ticks.map((t) => fmt.axis(t, unit, split[0]?.currency)), size: 64 }],
      series: [{}, ...split.map((s, i) => ({
        label: s.key, stroke: PALETTE[i % PALETTE.length], width: 2,
        fill: bars ? `${PALETTE[i % PALETTE.length]}55` : undefined,
        paths: bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined,
        value: (_, v) => fmt.value(v, unit, s.currency),
      }))],
    };
    const plot = new uPlot(options, data, element);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(element.clientWidth, 280), height }));
    resize.observe(element);
    return () => { resize.disconnect(); plot.destroy(); };
  }, [JSON.stringify(data), unit, bars]);
  if (!xs.length) return html`<${Empty} />`;
  return html`<div class="chart" role="img" aria-label=${`${title} by ${granularity}`} ref=${ref}></div>
    <details class="as-table"><summary>${title} as a table</summary>
      <${Table} caption=${title} columns=${[{ key: "period", label: granularity, format: (p) => fmt.day(p, granularity) },
        ...split.map((s) => ({ key: s.key, label: s.key, format: (v) => fmt.value(v, unit, s.currency) }))]}
        rows=${xs.map((x, i) => Object.fromEntries([["period", x], ...split.map((s, j) => [s.key, data[j + 1][i]])]))} />
    </details>`;
}

/** Horizontal bars: `items` of {label, value, text}; `max` scales them (the largest value by default). */
export function BarList({ items, max, label }) {
  const top = (max ?? Math.max(...items.map((i) => i.value || 0), 0)) || 1;
  return html`<ul class="bars" aria-label=${label}>${items.map((item, i) => html`
    <li data-label=${item.label} data-value=${item.value}><span class="bar-label">${item.label}</span>
      <span class="bar-track"><span class="bar" style=${`width:${Math.max(0, (item.value || 0) / top) * 100}%;background:${item.color || PALETTE[i % PALETTE.length]}`}></span></span>
      <span class="bar-value">${item.text ?? fmt.number(item.value)}</span></li>`)}</ul>`;
}

/** A table; columns are {key, label, format(value, row), numeric}. */
export function Table({ columns, rows, caption, id }) {
  return html`<div class="table-wrap"><table id=${id}>
    ${caption && html`<caption class="sr-only">${caption}</caption>`}
    <thead><tr>${columns.map((c) => html`<th scope="col" class=${c.numeric === false ? "" : "num"}>${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((row) => html`<tr>${columns.map((c, i) => {
      const content = c.format ? c.format(row[c.key], row) : row[c.key];
      return i === 0 ? html`<th scope="row">${content}</th>` : html`<td class=${c.numeric === false ? "" : "num"}>${content}</td>`;
    })}</tr>`)}</tbody></table></div>`;
}
