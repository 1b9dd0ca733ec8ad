// Profile: one customer's 360° view, found by any identifier (#/profile?id=email:c1@example.com): identifiers,
// traits, computed traits and prediction scores, tags, identity events and the timeline, newest first. With
// `as_of` the profile and its timeline are read as the platform knew them then (time travel).
import { ApiError, api } from "../api.js";
import { Failed, Loading, Panel, Section } from "../components.js";
import { useQuery } from "../data.js";
import * as fmt from "../format.js";
import { html, useEffect, useState } from "../lib.js";
import { href, setParams } from "../route.js";

// A profile moves with its events; the live feed announces orders, tickets and feedback as KPI updates.
const LIVE_KPIS = ["revenue", "orders", "average_order_value", "csat", "nps", "open_ticket_backlog", "pipeline_value",
  "won_revenue"];
const TYPES = [["guess", "Guess from the text"], ["email", "Email"], ["user_id", "User id"], ["phone", "Phone"],
  ["anonymous_id", "Anonymous id"], ["profile_id", "Profile id"]];
const BUILTIN = ["user_id", "email", "phone", "anonymous_id"];
const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const PREDICTIONS = ["purchase_propensity", "churn_risk", "predicted_ltv"];
const MONEY = ["revenue", "average_order_value"];
const TIMELINE_PAGE = 25;
const HELP = "Identifiers look like email:ann@example.com, user_id:42, phone:+4915112345678, anonymous_id:device-9 "
  + "or a profile id; a bare email is taken as email:, +49… as a phone, other text as a user id, then an anonymous id.";

/** The identifiers to try for what was typed, most likely first (the API's own rule for type:value). */
export function candidates(text) {
  const typed = /^([a-z][a-z0-9_]*):(.+)$/.exec(text);
  if (typed && (BUILTIN.includes(typed[1]) || typed[1].endsWith("_id"))) return [text];
  if (UUID.test(text)) return [text];
  if (text.includes("@")) return [`email:${text}`];
  if (/^\+[0-9][0-9 ()./-]{5,}$/.test(text)) return [`phone:${text}`];
  return [`user_id:${text}`, `anonymous_id:${text}`]; // numeric user ids are common: digits alone are no phone
}

/** An API time (no zone: UTC, as the API reads it) as a Date. */
const parseTime = (text) => new Date(/([zZ]|[+-]\d\d:?\d\d)$/.test(text) ? text : `${text}Z`);

/** A time as the value of a datetime-local input, in the reader's time zone, to the second. */
function localInput(text) {
  const d = parseTime(text);
  if (Number.isNaN(d.getTime())) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

const path = (identifier, tail = "") => `/v1/profiles/${encodeURIComponent(identifier)}${tail}`;

/** The first candidate a profile has: {identifier, profile}; an ApiError not_found naming them all otherwise. */
async function findProfile(text, asOf, signal) {
  const tried = candidates(text);
  for (const identifier of tried) {
    try {
      return { identifier, profile: await api(path(identifier), { params: { as_of: asOf }, signal }) };
    } catch (error) {
      if (error.status !== 404) throw error;
    }
  }
  const when = asOf ? ` as of ${fmt.dateTime(parseTime(asOf).toISOString())}` : "";
  throw new ApiError(404, "not_found", `No profile for ${tried.join(" or ")}${when}.`);
}

// -- search and time travel -----------------------------------------------------------------------------

function Search({ params }) {
  const [text, setText] = useState(params.id || "");
  const [type, setType] = useState("guess");
  const [when, setWhen] = useState(params.as_of ? localInput(params.as_of) : "");
  useEffect(() => setText(params.id || ""), [params.id]);
  useEffect(() => setWhen(params.as_of ? localInput(params.as_of) : ""), [params.as_of]);
  const search = (event) => {
    event.preventDefault();
    const value = text.trim();
    if (!value) return;
    const id = type === "guess" || type === "profile_id" || value.startsWith(`${type}:`) ? value : `${type}:${value}`;
    setParams({ id });
  };
  const travel = (event) => {
    event.preventDefault();
    const d = new Date(when); // a datetime-local value: the reader's time zone
    if (!when || Number.isNaN(d.getTime())) return;
    setParams({ as_of: d.toISOString() });
  };
  return html`<div class="profile-search">
    <form class="controls" role="search" aria-label="Find a profile" onSubmit=${search}>
      <label>Identifier <input name="identifier" type="search" value=${text} size="32" autocomplete="off"
        placeholder="c1@example.com, user-1, c1-web, +49…" onInput=${(e) => setText(e.target.value)} /></label>
      <label>Type <select name="type" value=${type} onChange=${(e) => setType(e.target.value)}>
        ${TYPES.map(([key, label]) => html`<option value=${key}>${label}</option>`)}</select></label>
      <button type="submit">Find</button>
    </form>
    <form class="controls" aria-label="Time travel" onSubmit=${travel}>
      <label>As of <input name="as_of" type="datetime-local" step="1" value=${when}
        onInput=${(e) => setWhen(e.target.value)} /></label>
      <button type="submit" disabled=${!when}>Show as of then</button>
      ${params.as_of && html`<button type="button" onClick=${() => setParams({ as_of: null })}>Back to now</button>`}
    </form></div>`;
}

// -- values ---------------------------------------------------------------------------------------------

const isTime = (v) => typeof v === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v);

function plain(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return fmt.number(v, 2);
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (isTime(v)) return fmt.dateTime(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

const perCurrency = (v) => (Object.keys(v || {}).length
  ? Object.entries(v).map(([c, n]) => fmt.money(Number(n), c)).join(" · ") : "–");

/** A computed trait as a reader wants it: money in its currencies, counts by kind, RFM as its tier. */
function computedText(name, v) {
  if (MONEY.includes(name)) return perCurrency(v);
  if (name === "rfm") return v ? `${v.tier} (R${v.recency} F${v.frequency} M${v.monetary})` : "–";
  if (v && typeof v === "object" && !Array.isArray(v)) {
    return Object.entries(v).map(([k, n]) => `${k} ${plain(n)}`).join(" · ") || "–";
  }
  return plain(v);
}

function predictionText(name, p) {
  if (name === "predicted_ltv") {
    return `${perCurrency(p.value)} in ${fmt.number(p.horizon_days)} days · ${fmt.number(p.expected_purchases, 2)} `
      + `purchases expected · ${fmt.percent(p.probability_alive)} likely active`;
  }
  if (typeof p.probability === "number") return `${fmt.percent(p.probability)} within ${fmt.number(p.horizon_days)} days`;
  return plain(p);
}

const json = (v) => JSON.stringify(v ?? null);

function Facts({ rows, testid, empty }) {
  if (!rows.length) return html`<p class="muted">${empty}</p>`;
  return html`<dl class="profile-facts">${rows.map(([name, text, raw]) => html`<div data-testid=${`${testid}-${name}`}
      data-name=${name} data-value=${json(raw)}><dt>${name}</dt><dd>${text}</dd></div>`)}</dl>`;
}

// -- the 360° view --------------------------------------------------------------------------------------

function Summary({ profile, identifier }) {
  const c = profile.computed_traits;
  return html`<dl class="profile-summary">
    <div><dt>Profile id</dt><dd class="id" data-testid="profile-id" data-value=${profile.profile_id}>${profile.profile_id}</dd></div>
    <div><dt>Found by</dt><dd class="id" data-testid="found-by">${identifier}</dd></div>
    <div><dt>Events</dt><dd data-testid="event-count" data-value=${profile.event_count}>${fmt.number(profile.event_count)}</dd></div>
    <div><dt>Lifecycle stage</dt><dd>${c.lifecycle_stage || "–"}</dd></div>
    <div><dt>First seen</dt><dd>${fmt.dateTime(profile.first_seen)}</dd></div>
    <div><dt>Last seen</dt><dd>${fmt.dateTime(profile.last_seen)}</dd></div>
  </dl>`;
}

function Identifiers({ profile }) {
  const pairs = Object.entries(profile.identifiers).flatMap(([type, values]) => values.map((v) => [type, v]));
  return html`<ul class="profile-identifiers">${pairs.map(([type, v]) => html`<li data-testid="identifier"
      data-value=${`${type}:${v}`}><span class="muted small">${type}</span> <a href=${href("profile",
      { id: `${type}:${v}` })}>${v}</a></li>`)}</ul>
    ${profile.merged_profiles?.length > 0 && html`<p class="small muted">Profiles merged into this one:
      ${profile.merged_profiles.map((id) => html` <code>${id}</code>`)}</p>`}`;
}

function Tags({ identifier, profile, asOf }) {
  const changes = useQuery(`tag-changes:${identifier}:${asOf || ""}`,
    (signal) => api(path(identifier, "/tag-changes"), { params: { limit: 50 }, signal }), asOf ? [] : LIVE_KPIS);
  const until = asOf ? parseTime(asOf).getTime() : Infinity;
  const held = (t) => html`<li data-testid="tag" data-value=${t.id}>
    <a href=${href("segments", { slug: t.id, kind: "tag" })}>${t.name}</a>${" "}
    <span class="muted small">${t.kind}, since ${fmt.dateTime(t.since)}</span></li>`;
  return html`${asOf ? html`<p class="muted small">Tags held are shown for now only; the enters and exits below are those
      decided by the time chosen.</p>`
    : profile.tags?.length ? html`<ul class="profile-tags">${profile.tags.map(held)}</ul>`
      : html`<p class="muted">In no tag.</p>`}
    <${Panel} result=${changes}>${(d) => {
      const shown = d.changes.filter((c) => parseTime(c.at).getTime() <= until);
      return shown.length ? html`<${ChangeTable} caption="Tag changes" rows=${shown.map((c) => ({
        when: c.at, what: `${c.change} ${c.tag_id}`, why: `${c.cause}${c.reason ? `: ${c.reason}` : ""}` }))} />`
        : html`<p class="muted small">No tag changes.</p>`;
    }}</${Panel}>`;
}

function ChangeTable({ caption, rows, testid }) {
  return html`<div class="table-wrap"><table><caption class="sr-only">${caption}</caption>
    <thead><tr><th scope="col">When</th><th scope="col">What</th><th scope="col">Why</th></tr></thead>
    <tbody>${rows.map((r) => html`<tr data-testid=${testid}><th scope="row">${fmt.dateTime(r.when)}</th>
      <td>${r.what}</td><td class="small">${r.why}</td></tr>`)}</tbody></table></div>`;
}

/** Identity events: now, every one of the profile and of those merged into it; as of a time, those recorded by then. */
function Identity({ identifier, profile, asOf }) {
  const merges = useQuery(`merges:${identifier}:${asOf || ""}`, async (signal) => (asOf
    ? { changes: profile.merge_history || [] } : api(path(identifier, "/merges"), { signal })), asOf ? [] : LIVE_KPIS);
  return html`<${Panel} result=${merges}>${(d) => (d.changes.length ? html`<${ChangeTable} caption="Identity events"
      testid="identity-change" rows=${[...d.changes].reverse().map((c) => ({ when: c.recorded_at,
        what: `${c.change.replaceAll("_", " ")}${c.identifiers.length ? `: ${c.identifiers.join(", ")}` : ""}`
          + `${c.other_profile_id ? ` (${c.other_profile_id.slice(0, 8)}…)` : ""}`,
        why: [c.profile_id === profile.profile_id ? "" : `on ${c.profile_id.slice(0, 8)}…`, c.reason || ""]
          .filter(Boolean).join(": ") }))} />`
    : html`<p class="muted">No identity events.</p>`)}</${Panel}>`;
}

async function timeline(identifier, asOf, count, signal) {
  const events = [];
  let cursor = null;
  do {
    const page = await api(path(identifier, "/events"), {
      params: { limit: Math.min(count - events.length, 1000), cursor, as_of: asOf }, signal });
    events.push(...page.events);
    cursor = page.next_cursor;
  } while (cursor && events.length < count);
  return { events, more: Boolean(cursor) };
}

const propertiesText = (properties) => Object.entries(properties).slice(0, 3).map(([k, v]) => `${k}: ${plain(v)}`)
  .join(" · ");

function eventTitle(e) {
  if (e.type === "track") return e.event;
  if (e.type === "page" || e.type === "screen") return `${e.type}${e.name ? `: ${e.name}` : ""}`;
  return e.type;
}

function Timeline({ identifier, profile, asOf }) {
  const [count, setCount] = useState(TIMELINE_PAGE);
  const result = useQuery(`events:${identifier}:${asOf || ""}:${count}`, (signal) => timeline(identifier, asOf, count,
    signal), asOf ? [] : LIVE_KPIS);
  return html`<${Panel} result=${result}>${(d) => (!d.events.length ? html`<p class="muted">No events.</p>` : html`
    <p class="muted small" data-testid="timeline-shown" data-value=${d.events.length}>
      ${`${fmt.number(d.events.length)} of ${fmt.number(profile.event_count)} events, newest first`}</p>
    <ol class="profile-timeline" data-testid="timeline">${d.events.map((e) => html`<li data-testid="event"
        data-event-id=${e.event_id}>
      <time datetime=${e.timestamp}>${fmt.dateTime(e.timestamp)}</time>
      <details class="event-detail"><summary><strong>${eventTitle(e)}</strong>
        <span class="muted small">${propertiesText(e.properties)}</span></summary>
        <p class="small muted">${e.type} · via ${e.anchor} · received ${fmt.dateTime(e.received_at)}</p>
        <pre>${JSON.stringify({ properties: e.properties, traits: e.traits, context: e.context }, null, 2)}</pre>
      </details></li>`)}</ol>
    ${d.more && html`<button type="button" onClick=${() => setCount(count + TIMELINE_PAGE)}
      disabled=${result.loading}>Load more</button>`}`)}</${Panel}>`;
}

// A grid item as narrow as the column, whatever its tables' width (they scroll in their own box).
const Cell = ({ children }) => html`<div style="min-width: 0">${children}</div>`;

function Profile360({ identifier, profile, asOf }) {
  const computed = Object.entries(profile.computed_traits).filter(([name]) => !PREDICTIONS.includes(name));
  const predictions = PREDICTIONS.filter((name) => profile.computed_traits[name]);
  const key = `${identifier}:${asOf || ""}`;
  return html`
    ${asOf && html`<p class="state as-of" role="status" data-testid="as-of-banner">Time travel: the profile as the platform
      knew it on <strong>${fmt.dateTime(parseTime(asOf).toISOString())}</strong> (events received by then).</p>`}
    <${Section} title="Customer" id="customer-title"><${Summary} profile=${profile} identifier=${identifier} /></${Section}>
    <div class="grid-2">
      <${Cell}><${Section} title="Identifiers" id="identifiers-title"><${Identifiers} profile=${profile} /></${Section}></${Cell}>
      <${Cell}><${Section} title="Traits" id="traits-title">
        <${Facts} testid="trait" empty="No traits." rows=${Object.entries(profile.traits).map(([k, v]) => [k, plain(v), v])} />
      </${Section}></${Cell}>
      <${Cell}><${Section} title="Computed traits" id="computed-title">
        <${Facts} testid="computed" empty="None." rows=${computed.map(([k, v]) => [k, computedText(k, v), v])} />
      </${Section}></${Cell}>
      <${Cell}><${Section} title="Predictions" id="predictions-title">
        <${Facts} testid="computed" empty="No scores yet: they come with the first prediction run."
          rows=${predictions.map((k) => [k, predictionText(k, profile.computed_traits[k]), profile.computed_traits[k]])} />
      </${Section}></${Cell}>
      <${Cell}><${Section} title="Tags" id="tags-title"><${Tags} key=${key} identifier=${identifier} profile=${profile}
        asOf=${asOf} /></${Section}></${Cell}>
      <${Cell}><${Section} title="Identity events" id="identity-title"><${Identity} key=${key} identifier=${identifier}
        profile=${profile} asOf=${asOf} /></${Section}></${Cell}>
    </div>
    <${Section} title="Timeline" id="timeline-title"><${Timeline} key=${key} identifier=${identifier} profile=${profile}
      asOf=${asOf} /></${Section}>`;
}

function Missing({ error }) {
  return html`<div class="state failed" role="alert" data-testid="profile-missing"><strong>${error.message}</strong>
    <p>${HELP}</p></div>`;
}

export default function Profile({ params }) {
  const id = (params.id || "").trim();
  const asOf = params.as_of || "";
  const found = useQuery(`profile:${id}:${asOf}`, (signal) => (id ? findProfile(id, asOf, signal) : Promise.resolve(null)),
    asOf ? [] : LIVE_KPIS);
  let body;
  if (!id) {
    body = html`<p class="state empty">Find a customer by any of their identifiers. ${HELP}</p>`;
  } else if (found.error) {
    body = found.error.status === 404 || found.error.status === 400 ? html`<${Missing} error=${found.error} />`
      : html`<${Failed} error=${found.error} />`;
  } else if (!found.data) {
    body = html`<${Loading} />`;
  } else {
    body = html`<div class=${found.loading ? "refreshing" : ""}><${Profile360} identifier=${found.data.identifier}
      profile=${found.data.profile} asOf=${asOf} /></div>`;
  }
  return html`<${Search} params=${params} />${body}`;
}
