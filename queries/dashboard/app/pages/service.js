// Service: how fast tickets are answered and resolved, the open backlog, complaints, and what customers
// say (CSAT and NPS, with the answers per score).
import { BarList, Controls, KpiCard, Panel, Section, TimeChart } from "../components.js";
import { useKpi } from "../data.js";
import * as fmt from "../format.js";
import { html } from "../lib.js";

// Each KPI's dimensions (domain/kpis.py): a request carries only the breakdown and filters its KPI takes.
const SERVICE = ["channel", "category", "priority", "owner"];
const DIMENSIONS = {
  first_response_time: SERVICE, resolution_time: SERVICE, open_ticket_backlog: SERVICE,
  complaints_per_1000_customers: [], csat: ["channel"], nps: ["channel"],
};
// Complaints per 1,000 customers is a rate per thousand, not a share: written as a plain number.
const HEADLINES = [
  ["first_response_time", "First response time", "hours"], ["resolution_time", "Resolution time", "hours"],
  ["open_ticket_backlog", "Open ticket backlog", "count"],
  ["complaints_per_1000_customers", "Complaints per 1,000 customers", "score"],
  ["csat", "Customer satisfaction", "ratio"], ["nps", "Net promoter score", "score"],
];
const TITLES = Object.fromEntries(HEADLINES.map(([name, title]) => [name, title]));
const COLOURS = { bad: "#dc2626", neutral: "#d97706", good: "#059669" };

/** The view's filters (or with `by`, its breakdown) that `names` cannot take: said, rather than dropped. */
function Unsliced({ params, names, by = false }) {
  const notes = names.flatMap((name) => (by
    ? (params.by && !DIMENSIONS[name].includes(params.by) ? [`${TITLES[name]} cannot be broken down by ${params.by}.`] : [])
    : SERVICE.filter((d) => params[d] && !DIMENSIONS[name].includes(d))
      .map((d) => `${TITLES[name]} cannot be filtered by ${d}: shown for every ${d}.`)));
  return notes.length ? html`<p class="muted small unsliced">${notes.join(" ")}</p>` : null;
}

function Chart({ name, title, params, what, unit, bars = false }) {
  const result = useKpi(name, params, {}, DIMENSIONS[name]);
  return html`<${Panel} result=${result} what=${what} empty=${(d) => !d.series.length}>
    ${(answer) => html`<${TimeChart} answer=${unit ? { ...answer, unit } : answer} title=${title} bars=${bars}
      height=${200} />`}</${Panel}>`;
}

/** Bars per score of a csat or nps answer's `distribution`; `tone(score)` colours a score good, neutral or bad. */
function Scores({ row, name, tone }) {
  const total = Object.values(row.distribution).reduce((a, b) => a + b, 0);
  const items = Object.entries(row.distribution).sort(([a], [b]) => Number(a) - Number(b)).map(([score, n]) => ({
    label: score, value: n, color: COLOURS[tone(Number(score))],
    text: `${fmt.number(n)} (${fmt.percent(total ? n / total : null, 0)})`,
  }));
  return html`<div data-testid=${`${name}-distribution`} data-channel=${row.channel ?? ""} data-answers=${row.answers}>
    <${BarList} label=${`${TITLES[name]}: answers per score`} items=${items} /></div>`;
}

function Distribution({ name, params, tone, legend, summary }) {
  const result = useKpi(name, params, { granularity: "total" }, DIMENSIONS[name]);
  return html`<${Panel} result=${result} what="answers" empty=${(d) => !d.series.length}>
    ${(answer) => html`${answer.series.map((row) => html`<div class="distribution">
      ${answer.by && html`<h3>${answer.by} = ${row[answer.by] === "" ? "(none)" : row[answer.by]}</h3>`}
      <p class="muted small">${summary(row)}</p>
      <${Scores} row=${row} name=${name} tone=${tone} /></div>`)}
      <p class="muted small">${legend}</p>`}</${Panel}>`;
}

export default function Service({ params }) {
  const headline = { ...params, by: null }; // cards: the whole period, filtered, not broken down
  return html`
    <${Controls} params=${params} dimensions=${SERVICE} />
    <div class="cards">${HEADLINES.map(([name, title, unit]) => html`<${KpiCard} name=${name} title=${title}
      unit=${unit} params=${headline} dimensions=${DIMENSIONS[name]} />`)}</div>
    <${Unsliced} params=${params} names=${HEADLINES.map(([name]) => name)} />
    <div class="grid-2">
      <${Section} title="First response time" id="first-response-title">
        <${Chart} name="first_response_time" title="First response time" params=${params} what="tickets opened" /></${Section}>
      <${Section} title="Resolution time" id="resolution-title">
        <${Chart} name="resolution_time" title="Resolution time" params=${params} what="tickets resolved" /></${Section}>
    </div>
    <div class="grid-2">
      <${Section} title="Open ticket backlog" id="backlog-title">
        <${Chart} name="open_ticket_backlog" title="Open ticket backlog" params=${params} what="tickets" /></${Section}>
      <${Section} title="Complaints per 1,000 customers" id="complaints-title">
        <${Chart} name="complaints_per_1000_customers" title="Complaints per 1,000 customers" params=${params}
          what="active customers" unit="score" bars=${true} />
        <${Unsliced} params=${params} names=${["complaints_per_1000_customers"]} by=${true} /></${Section}>
    </div>
    <div class="grid-2">
      <${Section} title="Customer satisfaction (CSAT)" id="csat-title">
        <${Distribution} name="csat" params=${params} tone=${(s) => (s >= 4 ? "good" : s === 3 ? "neutral" : "bad")}
          legend="Scores 1 to 5; 4 and 5 count as satisfied."
          summary=${(row) => `${fmt.percent(row.value)} satisfied · mean ${fmt.number(row.mean, 2)} · ${fmt.number(row.answers)} answers`} />
        <${Unsliced} params=${params} names=${["csat"]} by=${true} /></${Section}>
      <${Section} title="Net promoter score (NPS)" id="nps-title">
        <${Distribution} name="nps" params=${params} tone=${(s) => (s >= 9 ? "good" : s >= 7 ? "neutral" : "bad")}
          legend="Scores 0 to 10: 0–6 detractors, 7–8 passives, 9–10 promoters."
          summary=${(row) => `NPS ${fmt.number(row.value, 1)} · ${fmt.number(row.promoters)} promoters, ${fmt.number(row.detractors)} detractors · ${fmt.number(row.answers)} answers`} />
        <${Unsliced} params=${params} names=${["nps"]} by=${true} /></${Section}>
    </div>
    <div class="grid-2">
      <${Section} title="CSAT over time" id="csat-time-title">
        <${Chart} name="csat" title="Customer satisfaction" params=${params} what="answers" /></${Section}>
      <${Section} title="NPS over time" id="nps-time-title">
        <${Chart} name="nps" title="Net promoter score" params=${params} what="answers" /></${Section}>
    </div>`;
}
