// Overview: the period's headline KPIs against the previous period, revenue over time, and the
// platform live: events per second, profiles, and how far each projection is behind the log.
import { Controls, KpiCard, Panel, Section, TimeChart } from "../components.js";
import { useKpi } from "../data.js";
import * as fmt from "../format.js";
import { html } from "../lib.js";
import { useLive } from "../live.js";

export const HEADLINES = [
  ["revenue", "Revenue", "money"], ["orders", "Orders", "count"], ["average_order_value", "Average order value", "money"],
  ["active_customers", "Active customers", "count"], ["csat", "Customer satisfaction", "ratio"],
  ["nps", "Net promoter score", "score"], ["win_rate", "Win rate", "ratio"],
  ["open_ticket_backlog", "Open ticket backlog", "count"],
];
const REVENUE_DIMENSIONS = ["channel", "campaign", "product", "category"];

function LiveCounters() {
  const { status, mode } = useLive();
  if (!status) return html`<p class="muted">${mode === "paused" ? "Live updates are paused." : "Waiting for the live feed…"}</p>`;
  return html`<dl class="counters" aria-live="polite">
    <div><dt>Events per second</dt><dd data-testid="events-per-second">${fmt.number(status.events_per_second, 1)}</dd></div>
    <div><dt>Profiles</dt><dd data-testid="profiles">${fmt.number(status.profiles)}</dd></div>
    <div><dt>Events since start</dt><dd data-testid="events-seen">${fmt.number(status.events_seen)}</dd></div>
    <div><dt>Log position</dt><dd>${fmt.number(status.log_position)}</dd></div>
    ${Object.entries(status.lag).map(([name, lag]) => html`<div><dt>${name} lag</dt>
      <dd data-testid=${`lag-${name}`} class=${lag > 0 ? "behind" : ""}>${fmt.number(lag)}</dd></div>`)}
    ${status.dead_letters > 0 && html`<div><dt>Dead letters</dt><dd>${fmt.number(status.dead_letters)}</dd></div>`}
    ${status.quarantined > 0 && html`<div><dt>Quarantined</dt><dd>${fmt.number(status.quarantined)}</dd></div>`}
  </dl>`;
}

export default function Overview({ params }) {
  const revenue = useKpi("revenue", params, {}, REVENUE_DIMENSIONS);
  return html`
    <${Controls} params=${params} dimensions=${REVENUE_DIMENSIONS} />
    <div class="cards">${HEADLINES.map(([name, title, unit]) =>
      html`<${KpiCard} name=${name} title=${title} unit=${unit} params=${params} dimensions=${[]} />`)}</div>
    <${Section} title="Live" id="live-title"><${LiveCounters} /></${Section}>
    <${Section} title="Revenue" id="revenue-title">
      <${Panel} result=${revenue} what="orders" empty=${(d) => !d.series.length}>
        ${(answer) => html`<${TimeChart} answer=${answer} title="Revenue" />`}</${Panel}>
    </${Section}>`;
}
