// Customers: monthly retention cohorts as a heat map, the RFM tiers and lifecycle stages of today, and a
// funnel builder whose definition lives in the URL (steps=page,Order Completed&within=7d) so it can be shared.
import { api } from "../api.js";
import { BarList, Controls, Panel, Section } from "../components.js";
import { useQuery } from "../data.js";
import * as fmt from "../format.js";
import { html, useEffect, useRef, useState } from "../lib.js";
import { kpiParams, setParams } from "../route.js";

// -- funnel definitions ---------------------------------------------------------------------------------

const TYPES = ["page", "screen", "identify", "track", "group", "alias"]; // as POST /v1/funnels takes them
const MAX_STEPS = 10;
const WINDOW = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$/; // the API's conversion windows: 30m, 12h, 7d, 2w
const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
const MAX_WINDOW_DAYS = 3660;
const WINDOWS = ["1h", "1d", "7d", "30d"];

let lastId = 0;
const blank = (kind = "event", match = "") => ({ id: ++lastId, kind, event: kind === "event" ? match : "",
  type: kind === "type" ? match : "page", name: "" });

// A step in the URL is its type (page) or event name (Order Completed), then ":label" if it has one.
// "%", "," and ":" are escaped; an event named like a type gets its first letter escaped, so it stays an event.
const hex = (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`;
const escape = (text) => text.replace(/[%,:]/g, hex);
const unescape = (text) => text.replace(/%([0-9A-Fa-f]{2})/g, (_, code) => String.fromCharCode(parseInt(code, 16)));

function encodeSteps(steps) {
  return steps.map((s) => {
    const event = s.event.trim();
    const match = s.kind === "type" ? s.type : TYPES.includes(event) ? hex(event[0]) + escape(event.slice(1)) : escape(event);
    return s.name.trim() ? `${match}:${escape(s.name.trim())}` : match;
  }).join(",");
}

function decodeSteps(text) {
  if (!text) return [];
  return text.split(",").map((token) => {
    const [match, label = ""] = token.split(":");
    const step = TYPES.includes(match) ? blank("type", match) : blank("event", unescape(match));
    return { ...step, name: unescape(label) };
  });
}

/** What keeps a funnel from being asked for, in words for the reader; none when it can be. */
function problems(steps, within) {
  const out = [];
  if (steps.length < 2) out.push("A funnel needs at least 2 steps: add another step.");
  if (steps.length > MAX_STEPS) out.push(`A funnel has at most ${MAX_STEPS} steps: remove ${steps.length - MAX_STEPS}.`);
  steps.forEach((s, i) => { if (s.kind === "event" && !s.event.trim()) out.push(`Step ${i + 1} needs an event name.`); });
  const text = (within || "").trim();
  const match = WINDOW.exec(text);
  const seconds = match ? parseFloat(match[1]) * UNIT_SECONDS[match[2]] : null;
  if (!text) out.push("Give a conversion window, such as 1h, 1d, 7d or 30d.");
  else if (!match) out.push(`“${text}” is not a conversion window: write a number and a unit (s, m, h, d or w), such as 30m, 1h, 7d or 2w.`);
  else if (seconds > MAX_WINDOW_DAYS * 86400) out.push(`The conversion window is at most ${MAX_WINDOW_DAYS}d.`);
  else if (seconds < 1) out.push("The conversion window must be at least 1s.");
  return out;
}

const apiStep = (s) => (s.kind === "type" ? { type: s.type } : { event: s.event.trim() });

// -- the funnel builder -----------------------------------------------------------------------------------

function StepEditor({ step, index, count, onChange, onRemove }) {
  const n = index + 1;
  const id = `step-${step.id}`;
  const prefix = html`<span class="sr-only">Step ${n} </span>`;
  return html`<li><fieldset class="funnel-step" data-testid="funnel-editor-step">
    <legend>Step ${n}</legend>
    <label>${prefix}Matches <select id=${`${id}-kind`} value=${step.kind} onChange=${(e) => onChange({ kind: e.target.value })}>
      <option value="event">an event name</option><option value="type">a call type</option></select></label>
    ${step.kind === "event"
      ? html`<label>${prefix}Event name <input id=${`${id}-match`} value=${step.event} placeholder="Order Completed"
          autocomplete="off" onInput=${(e) => onChange({ event: e.target.value })} /></label>`
      : html`<label>${prefix}Type <select id=${`${id}-match`} value=${step.type} onChange=${(e) => onChange({ type: e.target.value })}>
          ${TYPES.map((t) => html`<option value=${t}>${t}</option>`)}</select></label>`}
    <label>${prefix}Label (optional) <input value=${step.name} autocomplete="off"
      onInput=${(e) => onChange({ name: e.target.value })} /></label>
    <button type="button" id=${`${id}-remove`} class="remove" disabled=${count <= 1}
      aria-label=${`Remove step ${n}`} onClick=${onRemove}>Remove</button>
  </fieldset></li>`;
}

function fromUrl(params) {
  const steps = decodeSteps(params.steps);
  return { steps: steps.length ? steps : [blank("type", "page"), blank("event")], within: params.within || "7d" };
}

function FunnelBuilder({ params }) {
  const [draft, setDraft] = useState(() => fromUrl(params));
  const [messages, setMessages] = useState([]);
  const focus = useRef(null); // the element to focus once the steps have been drawn again
  useEffect(() => { // the URL changed (back button, a shared link): show its funnel, unless it is the draft's
    setDraft((d) => (encodeSteps(d.steps) === (params.steps || "") && d.within === (params.within || "7d") ? d : fromUrl(params)));
    setMessages([]);
  }, [params.steps, params.within]);
  useEffect(() => {
    if (focus.current) document.getElementById(focus.current)?.focus();
    focus.current = null;
  }, [draft.steps.length]);

  const change = (id, patch) => setDraft((d) => ({ ...d, steps: d.steps.map((s) => (s.id === id ? { ...s, ...patch } : s)) }));
  const add = () => {
    const step = blank();
    focus.current = `step-${step.id}-match`;
    setDraft((d) => ({ ...d, steps: [...d.steps, step] }));
  };
  const remove = (index) => {
    const left = draft.steps.filter((_, i) => i !== index);
    // The neighbour's Remove button, or Add step once the last Remove is disabled.
    focus.current = left.length > 1 ? `step-${left[Math.max(0, index - 1)].id}-remove` : "funnel-add";
    setDraft((d) => ({ ...d, steps: left }));
  };
  const submit = (event) => {
    event.preventDefault();
    const found = problems(draft.steps, draft.within);
    setMessages(found);
    if (!found.length) setParams({ steps: encodeSteps(draft.steps), within: draft.within.trim() });
  };
  return html`<form class="funnel-builder" aria-label="Funnel steps" onSubmit=${submit} noValidate>
    <ol class="funnel-steps">${draft.steps.map((step, i) => html`<${StepEditor} key=${step.id} step=${step} index=${i}
      count=${draft.steps.length} onChange=${(patch) => change(step.id, patch)} onRemove=${() => remove(i)} />`)}</ol>
    <div class="funnel-actions">
      <button type="button" id="funnel-add" onClick=${add} disabled=${draft.steps.length >= MAX_STEPS}>Add step</button>
      <label>Conversion window <input name="within" list="funnel-windows" value=${draft.within} size="6"
        aria-describedby="funnel-within-help" autocomplete="off"
        onInput=${(e) => setDraft((d) => ({ ...d, within: e.target.value }))} /></label>
      <datalist id="funnel-windows">${WINDOWS.map((w) => html`<option value=${w} />`)}</datalist>
      <button type="submit">Show funnel</button>
      <span id="funnel-within-help" class="muted small">from each person's first step: 30m, 1h, 1d, 7d, 2w…
        ${draft.steps.length >= MAX_STEPS ? ` At most ${MAX_STEPS} steps.` : ""}</span>
    </div>
    <div role="alert" data-testid="funnel-problems">${messages.length > 0 && html`<div class="state failed"><ul>
      ${messages.map((m) => html`<li>${m}</li>`)}</ul></div>`}</div>
  </form>`;
}

function FunnelBars({ answer, within }) {
  const first = answer.steps[0]?.people || 0;
  return html`<p data-testid="funnel-summary">${fmt.number(answer.converted)} of ${fmt.number(answer.entered)} people
    (<strong>${fmt.percent(answer.conversion_rate)}</strong>) went through all ${answer.steps.length} steps within ${within}.</p>
    <ol class="funnel" aria-label="People per step">${answer.steps.map((s, i) => html`<li data-testid="funnel-step"
      data-step=${s.step} data-name=${s.name} data-people=${s.people} data-from-previous=${s.conversion_from_previous ?? undefined}
      data-from-first=${s.conversion_from_first ?? undefined}>
      <span class="funnel-name">${s.step}. ${s.name}</span>
      <span class="bar-track"><span class="bar" style=${`width:${first ? (s.people / first) * 100 : 0}%`}></span></span>
      <span class="funnel-numbers"><strong>${fmt.number(s.people)}</strong>${" people · "}${i === 0 ? "entered"
        : `${fmt.percent(s.conversion_from_previous)} of step ${i} · ${fmt.percent(s.conversion_from_first)} of the first`}</span>
    </li>`)}</ol>`;
}

/** The URL's funnel for the view's period, or why it cannot be asked for. */
function Funnel({ params }) {
  const steps = decodeSteps(params.steps);
  const within = (params.within || "7d").trim();
  const found = params.steps ? problems(steps, within) : [];
  const { from, to } = kpiParams(params, { dimensions: [] });
  const body = { steps: steps.map((s) => ({ ...apiStep(s), ...(s.name ? { name: s.name } : {}) })), within, from, to };
  const asked = Boolean(params.steps) && !found.length;
  const result = useQuery(asked ? `funnel:${JSON.stringify(body)}` : "funnel:none",
    (signal) => (asked ? api("/v1/funnels", { method: "POST", body, signal }) : Promise.resolve(null)),
    ["conversion_rate", "orders"]);
  if (!params.steps) return html`<p class="muted">Choose the steps and a window, then <strong>Show funnel</strong>.</p>`;
  if (found.length) {
    return html`<div class="state failed" role="alert" data-testid="funnel-invalid"><strong>This funnel cannot be
      shown:</strong><ul>${found.map((m) => html`<li>${m}</li>`)}</ul></div>`;
  }
  return html`<${Panel} result=${result} what="people at the first step" empty=${(d) => !d || !d.entered}>
    ${(answer) => html`<${FunnelBars} answer=${answer} within=${within} />`}</${Panel}>`;
}

// -- cohorts, tiers and stages ----------------------------------------------------------------------------

/** A cell's background for a retention from 0 to 1, and a text colour that stays readable on it. */
function heat(retention) {
  if (retention === null || retention === undefined) return "";
  const a = 0.06 + 0.94 * Math.max(0, Math.min(1, retention));
  const rgb = [30, 58, 138].map((c) => Math.round(255 - (255 - c) * a)); // white to #1e3a8a
  const lum = rgb.map((c) => { const s = c / 255; return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; });
  const light = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2] > 0.179;
  return `background:rgb(${rgb.join(",")});color:${light ? "#111827" : "#fff"}`;
}

function CohortHeatMap({ cohorts }) {
  const months = Math.max(...cohorts.map((c) => c.retention.length));
  const ks = [...Array(months).keys()];
  return html`<div class="table-wrap"><table class="heat" data-testid="cohorts">
    <caption class="sr-only">Share of each monthly cohort active again k months after its first month</caption>
    <thead><tr><th scope="col">First seen</th><th scope="col" class="num">People</th>
      ${ks.map((k) => html`<th scope="col" class="month">Month ${k}</th>`)}</tr></thead>
    <tbody>${cohorts.map((c) => html`<tr data-cohort=${c.cohort}>
      <th scope="row">${fmt.day(`${c.cohort}-01`, "month")}</th><td class="num" data-testid="cohort-size"
        data-value=${c.size}>${fmt.number(c.size)}</td>
      ${ks.map((k) => (k < c.retention.length
        ? html`<td data-testid="cohort-cell" data-cohort=${c.cohort} data-month=${k} data-value=${c.retention[k] ?? undefined}
            style=${heat(c.retention[k])} title=${`${fmt.number(c.active[k])} of ${fmt.number(c.size)} people`}>
            ${fmt.percent(c.retention[k])}</td>`
        : html`<td class="heat-none"><span class="sr-only">not yet</span></td>`))}
    </tr>`)}</tbody></table></div>`;
}

const human = (text) => (text ? text[0].toUpperCase() + text.slice(1).replaceAll("_", " ") : "(none)");
// Best to worst, as the reader expects them; one the catalogue adds later goes last.
const TIER_ORDER = ["champion", "loyal", "new", "needs_attention", "at_risk", "hibernating"];
const STAGE_ORDER = ["visitor", "lead", "prospect", "customer", "repeat_customer", "at_risk", "churned"];
const ordered = (rows, key, order) => [...rows].sort((a, b) =>
  ((order.indexOf(a[key]) + 1) || 99) - ((order.indexOf(b[key]) + 1) || 99));

/** A snapshot KPI (rows {<key>, value, share}) as bars. */
function Snapshot({ kpi, title, id, keyName, order, what, live, note }) {
  const result = useQuery(kpi, (signal) => api(`/v1/kpis/${kpi}`, { signal }), [kpi, ...live]);
  return html`<${Section} title=${title} id=${id}><p class="muted small">${note}</p>
    <${Panel} result=${result} what=${what} empty=${(d) => !d.series.length}>
      ${(answer) => html`<div data-testid=${kpi}><${BarList} label=${title} items=${ordered(answer.series, keyName, order)
        .map((r) => ({ label: human(r[keyName]), value: r.value,
          text: `${fmt.number(r.value)} · ${fmt.percent(r.share)}` }))} /></div>`}</${Panel}></${Section}>`;
}

function Cohorts({ params }) {
  const { from, to } = kpiParams(params, { dimensions: [] });
  const result = useQuery(`cohorts?${from}&${to}`,
    (signal) => api("/v1/cohorts/retention", { params: { from, to }, signal }), ["retention_rate", "active_customers"]);
  return html`<${Section} title="Retention cohorts" id="cohorts-title">
    <p class="muted small">People by the month they were first seen (months starting in the period), and the share
      of them active again each month after.</p>
    <${Panel} result=${result} what="cohorts" empty=${(d) => !d.cohorts.length}>
      ${(d) => html`<${CohortHeatMap} cohorts=${d.cohorts} />`}</${Panel}></${Section}>`;
}

export default function Customers({ params }) {
  return html`
    <${Controls} params=${params} dimensions=${[]} granularity=${false} />
    <${Cohorts} params=${params} />
    <div class="grid-2">
      <${Snapshot} kpi="rfm_tiers" title="RFM tiers" id="rfm-title" keyName="tier" order=${TIER_ORDER}
        what="customers with orders" live=${["orders", "revenue"]}
        note="Customers with orders by recency, frequency and monetary tier, now (not the period)." />
      <${Snapshot} kpi="lifecycle_stages" title="Lifecycle stages" id="lifecycle-title" keyName="stage"
        order=${STAGE_ORDER} what="profiles" live=${["orders"]}
        note="Profiles per lifecycle stage by the workspace's lifecycle rules, now (not the period)." />
    </div>
    <${Section} title="Funnel" id="funnel-title">
      <p class="muted small">People who went through the steps in order within the window, starting in the view's
        period.</p>
      <${FunnelBuilder} params=${params} />
      <${Funnel} params=${params} /></${Section}>`;
}
