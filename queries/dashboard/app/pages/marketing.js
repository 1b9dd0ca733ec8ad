// Marketing: per campaign, the messages sent and the share of people who opened, clicked and ordered after a
// click; the customer acquisition cost per channel, in each currency (never summed across currencies).
import { api } from "../api.js";
import { BarList, Controls, Panel, Section, Table, TimeChart } from "../components.js";
import { useKpi, useQuery } from "../data.js";
import * as fmt from "../format.js";
import { html } from "../lib.js";
import { kpiParams } from "../route.js";

const DIMENSIONS = ["campaign", "channel"]; // what the campaign_* KPIs and the acquisition cost are sliced by
const CAMPAIGN_KPIS = [
  ["campaign_sent", "Sent", "count"], ["campaign_open_rate", "Open rate", "ratio"],
  ["campaign_click_rate", "Click rate", "ratio"], ["campaign_conversion_rate", "Conversion rate", "ratio"],
];
const RATES = CAMPAIGN_KPIS.filter(([, , unit]) => unit === "ratio");
// Not published live themselves; an order moves the conversion rate and the acquisition cost (first orders).
const LIVE = ["orders"];

const name = (value) => (value === "" || value === null || value === undefined ? "(none)" : String(value));

/** The period's totals of the campaign KPIs, one row per campaign, most messages first. */
function useCampaigns(params) {
  const query = { ...kpiParams(params, { dimensions: DIMENSIONS }), granularity: "total", by: "campaign" };
  return useQuery(`campaigns?${new URLSearchParams(query)}`, async (signal) => {
    const answers = await Promise.all(CAMPAIGN_KPIS.map(([kpi]) => api(`/v1/kpis/${kpi}`, { params: query, signal })));
    const rows = new Map();
    answers.forEach((answer, i) => {
      for (const row of answer.series) {
        const campaign = name(row.campaign);
        if (!rows.has(campaign)) rows.set(campaign, { campaign });
        rows.get(campaign)[CAMPAIGN_KPIS[i][0]] = row;
      }
    });
    return [...rows.values()].sort((a, b) => (b.campaign_sent?.value ?? 0) - (a.campaign_sent?.value ?? 0)
      || a.campaign.localeCompare(b.campaign));
  }, [...CAMPAIGN_KPIS.map(([kpi]) => kpi), ...LIVE]);
}

/** A rate with the counts it comes from, e.g. "30.2%" titled "68 of 225 people". */
function rateOf(row, kpi) {
  if (!row) return null;
  const [part, whole] = kpi === "campaign_open_rate" ? [row.opened, row.sent]
    : kpi === "campaign_click_rate" ? [row.clicked, row.sent] : [row.converted, row.clicked];
  return { value: row.value, title: whole === undefined ? undefined : `${fmt.number(part)} of ${fmt.number(whole)} people` };
}

function Figure({ kpi, campaign, value, title, unit }) {
  return html`<span data-kpi=${kpi} data-campaign=${campaign} data-value=${value ?? undefined} title=${title}>
    ${fmt.value(value, unit)}</span>`;
}

function CampaignTable({ rows }) {
  const columns = [
    { key: "campaign", label: "Campaign", numeric: false },
    ...CAMPAIGN_KPIS.map(([kpi, label, unit]) => ({
      key: kpi, label,
      format: (row, campaign) => {
        const shown = unit === "ratio" ? rateOf(row, kpi) : row && { value: row.value };
        return html`<${Figure} kpi=${kpi} campaign=${campaign.campaign} unit=${unit} value=${shown?.value}
          title=${shown?.title} />`;
      },
    })),
  ];
  return html`<${Table} caption="Campaigns in the period" columns=${columns} rows=${rows} id="campaigns" />
    <p class="muted small">Open and click rate: distinct people opening or clicking ÷ people sent to. Conversion
      rate: of the people who clicked, the share who completed an order within 7 days of a click.</p>`;
}

/** Per campaign, its three rates side by side on one 0–100% scale. */
function RateBars({ rows }) {
  return html`<div class="rate-groups">${rows.map((row) => html`<div class="rate-group">
    <h3>${row.campaign}</h3>
    <${BarList} label=${`Rates of ${row.campaign}`} max=${1} items=${RATES.map(([kpi, label]) => ({
      label, value: row[kpi]?.value ?? 0, text: fmt.percent(row[kpi]?.value),
    }))} /></div>`)}</div>`;
}

function Campaigns({ params }) {
  const result = useCampaigns(params);
  return html`<${Section} title="Campaigns" id="campaigns-title">
    <${Panel} result=${result} what="campaign messages" empty=${(rows) => !rows.length}>
      ${(rows) => html`<${CampaignTable} rows=${rows} />
        <div class="grid-2">
          <div class="chart-block"><h3>Messages sent</h3><${BarList} label="Messages sent per campaign"
            items=${rows.map((r) => ({ label: r.campaign, value: r.campaign_sent?.value ?? 0 }))} /></div>
          <div class="chart-block"><h3>Open, click and conversion rate</h3><${RateBars} rows=${rows} /></div>
        </div>`}
    </${Panel}></${Section}>`;
}

function Trend({ name, title, params, bars = false, what = "campaign messages" }) {
  const result = useKpi(name, params, {}, DIMENSIONS);
  return html`<div class="chart-block"><h3>${title}</h3>
    <${Panel} result=${result} what=${what} empty=${(d) => !d.series.length}>
      ${(answer) => html`<${TimeChart} answer=${answer} title=${title} bars=${bars} height=${200} />`}</${Panel}></div>`;
}

/** Acquisition cost for the period: per channel and currency, and over all channels. */
function useCac(params) {
  const { by: _, ...query } = { ...kpiParams(params, { dimensions: DIMENSIONS }), granularity: "total" };
  return useQuery(`cac?${new URLSearchParams(query)}`, async (signal) => {
    const [byChannel, all] = await Promise.all([
      api("/v1/kpis/customer_acquisition_cost", { params: { ...query, by: "channel" }, signal }),
      api("/v1/kpis/customer_acquisition_cost", { params: query, signal }),
    ]);
    return { channels: byChannel.series.map((r) => ({ ...r, channel: name(r.channel) })),
      total: all.series.map((r) => ({ ...r, channel: "All channels" })) };
  }, ["customer_acquisition_cost", ...LIVE]);
}

function CacTable({ channels, total }) {
  const money = (kpi) => (v, row) => html`<span data-kpi=${kpi} data-channel=${row.channel}
    data-currency=${row.currency} data-value=${v ?? undefined}>${fmt.money(v, row.currency)}</span>`;
  const columns = [
    { key: "channel", label: "Channel", numeric: false },
    { key: "currency", label: "Currency", numeric: false },
    { key: "cost", label: "Cost", format: money("cac-cost") },
    { key: "new_customers", label: "New customers", format: (v, row) => html`<span data-kpi="cac-new-customers"
      data-channel=${row.channel} data-currency=${row.currency} data-value=${v}>${fmt.number(v)}</span>` },
    { key: "value", label: "Acquisition cost", format: money("customer_acquisition_cost") },
  ];
  const undivided = [...channels, ...total].some((r) => r.value === null);
  return html`<${Table} caption="Customer acquisition cost per channel" columns=${columns} rows=${[...channels, ...total]}
      id="cac" />
    <p class="muted small">Cost incurred in the period ÷ people whose first order falls in it.
      ${undivided && " – : no first order in the period to divide the cost by (the cost's channel is not one orders came through)."}</p>
    <div class="chart-block"><h3>Per channel</h3><${BarList} label="Acquisition cost per channel"
      items=${channels.map((r) => ({ label: `${r.channel} · ${r.currency}`, value: r.value ?? 0,
        text: fmt.money(r.value, r.currency) }))} /></div>`;
}

function Acquisition({ params }) {
  const result = useCac(params);
  return html`<${Section} title="Customer acquisition cost" id="cac-title">
    <${Panel} result=${result} what="marketing costs" empty=${(d) => !d.channels.length && !d.total.length}>
      ${(d) => html`<${CacTable} ...${d} />`}</${Panel}>
    <${Trend} name="customer_acquisition_cost" title="Acquisition cost over time" params=${params}
      what="marketing costs" /></${Section}>`;
}

export default function Marketing({ params }) {
  return html`
    <${Controls} params=${params} dimensions=${DIMENSIONS} />
    <${Campaigns} params=${params} />
    <${Section} title="Campaigns over time" id="campaign-trends-title">
      <p class="muted small">One line per campaign or channel as the view's <em>Break down by</em> says; the totals for Nothing.</p>
      <div class="grid-2">${CAMPAIGN_KPIS.map(([kpi, title, unit]) =>
        html`<${Trend} name=${kpi} title=${title === "Sent" ? "Messages sent" : title} params=${params} bars=${unit === "count"} />`)}
      </div></${Section}>
    <${Acquisition} params=${params} />`;
}
