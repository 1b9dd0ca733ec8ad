// Sales: won revenue (per currency, over time and by a dimension), pipeline value, win rate, sales cycle,
// attainment of each sales target, and the reps side by side.
import { api } from "../api.js";
import { BarList, Controls, KpiCard, Panel, Section, Table, TimeChart } from "../components.js";
import { useKpi, useQuery } from "../data.js";
import * as fmt from "../format.js";
import { html } from "../lib.js";
import { kpiParams } from "../route.js";

// Each KPI's dimensions (domain/kpis.py): a request carries only the breakdown and filters its KPI takes.
const SALES = ["owner", "channel", "campaign", "category"];
const DIMENSIONS = {
  won_revenue: SALES, pipeline_value: SALES, win_rate: SALES, average_sales_cycle: SALES, leads: SALES,
  sales_activities: ["owner", "channel"], budget_attainment: ["owner"],
};
const HEADLINES = [
  ["won_revenue", "Won revenue", "money"], ["pipeline_value", "Pipeline value", "money"],
  ["win_rate", "Win rate", "ratio"], ["average_sales_cycle", "Average sales cycle", "days"],
  ["leads", "Leads", "count"], ["sales_activities", "Sales activities", "count"],
];
const OWNER_KPIS = ["won_revenue", "win_rate", "pipeline_value", "sales_activities", "average_sales_cycle"];
const TITLES = Object.fromEntries(HEADLINES.map(([name, title]) => [name, title]));

const label = (v) => (v === "" || v === null || v === undefined ? "(none)" : String(v));

/** The view's filters that `names` cannot take: said under the panel rather than silently dropped. */
function Unfiltered({ params, names }) {
  const notes = names.flatMap((name) => SALES.filter((d) => params[d] && !DIMENSIONS[name].includes(d))
    .map((d) => `${TITLES[name] || name} cannot be filtered by ${d}: shown for every ${d}.`));
  return notes.length ? html`<p class="muted small unsliced">${notes.join(" ")}</p>` : null;
}

/** A KPI over the whole period, by `by` (or not broken down), with the view's filters it can take. */
function useTotal(name, params, by) {
  const query = { ...kpiParams({ ...params, by: null }, { dimensions: DIMENSIONS[name] }), granularity: "total" };
  if (by) query.by = by;
  return useQuery(`total:${name}?${new URLSearchParams(query)}`,
    (signal) => api(`/v1/kpis/${name}`, { params: query, signal }), [name]);
}

function WonBy({ params }) {
  const by = params.by && SALES.includes(params.by) ? params.by : "owner";
  const result = useTotal("won_revenue", params, by);
  return html`<${Section} title=${`Won revenue by ${by}`} id="won-by-title">
    <${Panel} result=${result} what="won opportunities" empty=${(d) => !d.series.length}>
      ${(answer) => html`<div data-testid="won-by" data-by=${by}><${BarList} label=${`Won revenue by ${by}`}
        items=${[...answer.series].sort((a, b) => b.value - a.value).map((row) => ({
          label: `${label(row[by])}${row.currency ? ` · ${row.currency}` : ""}`, value: row.value,
          text: fmt.money(row.value, row.currency) }))} /></div>`}
    </${Panel}></${Section}>`;
}

function Chart({ name, title, params, what, bars = false, shown = (answer) => answer }) {
  const result = useKpi(name, params, {}, DIMENSIONS[name]);
  return html`<${Panel} result=${result} what=${what} empty=${(d) => !d.series.length}>
    ${(answer) => html`<${TimeChart} answer=${shown(answer)} title=${title} bars=${bars} height=${200} />`}</${Panel}>`;
}

// A sales cycle can be shorter than a day: written in hours, which fmt.hours turns into minutes, hours or days.
const cycle = (days) => (days === null || days === undefined ? "–" : fmt.hours(days * 24));
const cycleInHours = (answer) => ({ ...answer, unit: "hours",
  series: answer.series.map((row) => ({ ...row, value: row.value === null ? null : row.value * 24 })) });

const period = (row) => `${fmt.day(row.period_start)} – ${fmt.day(row.period_end)} ${row.period_end.slice(0, 4)}`;

function Targets({ params }) {
  const query = kpiParams({ ...params, by: null }, { dimensions: DIMENSIONS.budget_attainment });
  const result = useQuery(`budget_attainment?${new URLSearchParams(query)}`,
    (signal) => api("/v1/kpis/budget_attainment", { params: query, signal }), ["budget_attainment", "won_revenue"]);
  const columns = [
    { key: "owner", label: "Owner", numeric: false, format: label },
    { key: "period_start", label: "Target period", numeric: false, format: (_, row) => period(row) },
    { key: "target", label: "Target", format: (v, row) => fmt.money(v, row.currency) },
    { key: "won", label: "Won", format: (v, row) => fmt.money(v, row.currency) },
    { key: "value", label: "Attainment", format: (v, row) => html`<span class="attainment">
      <span class="meter" aria-hidden="true"><span style=${`width:${Math.min(1, v || 0) * 100}%`}></span></span>
      <span data-testid=${`attainment-${row.owner}-${row.period_start}`} data-value=${v}>${fmt.percent(v)}</span></span>` },
  ];
  return html`<${Panel} result=${result}>${(answer) => (answer.series.length
    ? html`<${Table} id="targets" caption="Budget attainment per sales target" columns=${columns} rows=${answer.series} />`
    : html`<div class="state empty"><p><strong>No sales target overlaps this period.</strong> Widen the time range,
        or set a target with a <code>Sales Target Set</code> event (owner, period_start, period_end, amount,
        currency).</p></div>`)}</${Panel}>`;
}

/** Money per currency, one line each (never added across currencies). */
const amounts = (owner, name, byCurrency) => (byCurrency && Object.keys(byCurrency).length
  ? html`${Object.entries(byCurrency).sort().map(([currency, v]) => html`<span class="amount"
      data-testid=${`owner-${owner}-${name}`} data-currency=${currency} data-value=${v}>${fmt.money(v, currency)}</span>`)}`
  : "–");

/** A number of the per-owner table, its raw value alongside for the tests. */
const cell = (owner, name, v, text) => (v === undefined ? "–"
  : html`<span data-testid=${`owner-${owner}-${name}`} data-value=${v}>${text}</span>`);

function Owners({ params }) {
  const queries = OWNER_KPIS.map((name) => ({
    ...kpiParams({ ...params, by: null }, { dimensions: DIMENSIONS[name] }), granularity: "total", by: "owner" }));
  const result = useQuery(`owners:${queries.map((q) => new URLSearchParams(q)).join("|")}`, async (signal) => {
    const answers = await Promise.all(OWNER_KPIS.map((name, i) => api(`/v1/kpis/${name}`, { params: queries[i], signal })));
    const owners = new Map();
    const of = (owner) => {
      if (!owners.has(owner)) owners.set(owner, { owner, won_revenue: {}, pipeline_value: {} });
      return owners.get(owner);
    };
    answers.forEach((answer, i) => {
      const name = OWNER_KPIS[i];
      for (const row of answer.series) {
        const entry = of(row.owner);
        if (row.currency !== undefined) entry[name][row.currency] = row.value;
        else entry[name] = row.value;
        if (name === "win_rate") entry.closed = row.closed;
      }
    });
    return [...owners.values()].sort((a, b) => label(a.owner).localeCompare(label(b.owner)));
  }, OWNER_KPIS);
  return html`<${Panel} result=${result} what="sales work" empty=${(rows) => !rows.length}>
    ${(rows) => html`<${Table} id="owners" caption="Sales per owner" rows=${rows} columns=${[
      { key: "owner", label: "Owner", numeric: false, format: label },
      { key: "won_revenue", label: "Won revenue", format: (v, row) => amounts(row.owner, "won_revenue", v) },
      { key: "win_rate", label: "Win rate", format: (v, row) => cell(row.owner, "win_rate", v, fmt.percent(v)) },
      { key: "closed", label: "Closed", format: (v) => fmt.number(v) },
      { key: "pipeline_value", label: "Pipeline value", format: (v, row) => amounts(row.owner, "pipeline_value", v) },
      { key: "sales_activities", label: "Activities", format: (v, row) => cell(row.owner, "sales_activities", v, fmt.number(v)) },
      { key: "average_sales_cycle", label: "Sales cycle", format: (v, row) => cell(row.owner, "average_sales_cycle", v, cycle(v)) },
    ]} />`}</${Panel}>
    <${Unfiltered} params=${params} names=${OWNER_KPIS} />`;
}

export default function Sales({ params }) {
  const headline = { ...params, by: null }; // cards: the whole period, filtered, not broken down
  return html`
    <${Controls} params=${params} dimensions=${SALES} />
    <div class="cards">${HEADLINES.map(([name, title, unit]) => html`<${KpiCard} name=${name} title=${title}
      unit=${unit} params=${headline} dimensions=${DIMENSIONS[name]} />`)}</div>
    <${Unfiltered} params=${params} names=${HEADLINES.map(([name]) => name)} />
    <${Section} title="Won revenue" id="won-title">
      <${Chart} name="won_revenue" title="Won revenue" params=${params} what="won opportunities" bars=${true} /></${Section}>
    <${WonBy} params=${params} />
    <${Section} title="Pipeline value" id="pipeline-title">
      <${Chart} name="pipeline_value" title="Pipeline value" params=${params} what="open opportunities" /></${Section}>
    <div class="grid-2">
      <${Section} title="Win rate" id="win-rate-title">
        <${Chart} name="win_rate" title="Win rate" params=${params} what="closed opportunities" bars=${true} /></${Section}>
      <${Section} title="Average sales cycle" id="cycle-title">
        <${Chart} name="average_sales_cycle" title="Average sales cycle" params=${params} what="won opportunities"
          bars=${true} shown=${cycleInHours} /></${Section}>
    </div>
    <${Section} title="Budget attainment" id="targets-title"><${Targets} params=${params} /></${Section}>
    <${Section} title="Per owner" id="owners-title"><${Owners} params=${params} /></${Section}>`;
}
