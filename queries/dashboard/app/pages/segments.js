// Segments and tags: every tag and saved segment of the workspace with its member count; the one the URL
// names (#/segments?slug=vip&kind=tag) with its members over time, enters and exits per period (tags only:
// segments record none), and its members, page by page, with a CSV export.
import { api } from "../api.js";
import { Controls, Failed, Loading, Panel, Section, TimeChart } from "../components.js";
import { useQuery } from "../data.js";
import * as fmt from "../format.js";
import { html, useState } from "../lib.js";
import { href, kpiParams } from "../route.js";

// Tags move as orders, tickets and feedback arrive; the live feed announces those as KPI updates.
export const LIVE_KPIS = ["revenue", "orders", "average_order_value", "csat", "nps", "open_ticket_backlog",
  "pipeline_value", "won_revenue"];
const PAGE = 25;
const NARROW = "min-width: 0"; // a grid item as narrow as its column, whatever its chart's or list's width
const EXPORT_PAGE = 1000;

const DEFINE_EXAMPLE = (origin) => `curl -X POST -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \\
  -d '{"id": "vip", "name": "VIP", "rule": {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 1000, "within": "90d"}}' \\
  ${origin}/v1/tags`;

/** The tags and segments listings in one answer. */
function useDefinitions() {
  return useQuery("definitions", async (signal) => {
    const [tags, segments] = await Promise.all([api("/v1/tags", { signal }), api("/v1/segments", { signal })]);
    return { tags: tags.tags, segments: segments.segments };
  }, LIVE_KPIS);
}

function Picker({ items, kind, selected, params, count }) {
  if (!items.length) return null;
  return html`<ul class="tag-picker" aria-label=${kind === "tag" ? "Tags" : "Segments"}>${items.map((d) => {
    const current = selected.kind === kind && selected.slug === d.id;
    const n = count(d);
    return html`<li><a href=${href("segments", { ...params, slug: d.id, kind })} aria-current=${current ? "true" : undefined}
        data-testid=${`${kind}-${d.id}`}>
      <span class="tag-picker-name">${d.name || d.id}</span> <code class="small">${d.id}</code>
      ${d.backfill && d.backfill.state !== "done" && html`<span class="muted small">backfill ${d.backfill.state}</span>`}
      <span class="tag-picker-count" data-testid=${`${kind}-${d.id}-count`} data-value=${n}>${fmt.number(n)}</span>
    </a></li>`;
  })}</ul>`;
}

function NoTags() {
  return html`<div class="state empty" data-testid="no-tags"><p><strong>No tags or segments yet.</strong> A tag is a
    rule over traits, computed traits and events; customers enter and leave it as they change. Define one with
    the admin key (the rule language is in docs/tags.md):</p>
    <pre>${DEFINE_EXAMPLE(location.origin)}</pre>
    <p class="small muted">A saved segment is the same with <code>/v1/segments</code>.</p></div>`;
}

// -- history ------------------------------------------------------------------------------------------------

function History({ kind, slug, params }) {
  const query = kpiParams(params, { dimensions: [] });
  const path = `/v1/${kind}s/${encodeURIComponent(slug)}/history`;
  const result = useQuery(`${path}?${new URLSearchParams(query)}`, (signal) => api(path, { params: query, signal }),
    LIVE_KPIS);
  if (result.error && result.error.code === "segment_has_no_history") {
    return html`<div class="state empty" data-testid="no-history"><p><strong>Segments keep no history.</strong>${" "}
      ${result.error.message}.</p></div>`;
  }
  return html`<${Panel} result=${result}>${(answer) => {
    const rows = answer.series;
    const totals = rows.reduce((t, r) => ({ entered: t.entered + r.entered, exited: t.exited + r.exited }),
      { entered: 0, exited: 0 });
    const end = rows.length ? rows[rows.length - 1].members : 0;
    // One chart each: bars of two series at the same period would hide each other.
    const chart = (key) => ({ series: rows.map((r) => ({ period: r.period, value: r[key] })), by: null, unit: "count",
      granularity: answer.granularity });
    return html`<dl class="counters history-counts">
        <div><dt>Members at the end</dt><dd data-testid="history-members" data-value=${end}>${fmt.number(end)}</dd></div>
        <div><dt>Entered</dt><dd data-testid="history-entered" data-value=${totals.entered}>${fmt.number(totals.entered)}</dd></div>
        <div><dt>Exited</dt><dd data-testid="history-exited" data-value=${totals.exited}>${fmt.number(totals.exited)}</dd></div>
      </dl>
      <h4 class="segment-sub">Members at the end of each ${answer.granularity}</h4>
      <${TimeChart} answer=${chart("members")} title="Members" />
      <div class="grid-2">
        <div style=${NARROW}><h4 class="segment-sub">Entered</h4>
          <${TimeChart} answer=${chart("entered")} title="Entered" bars=${true} /></div>
        <div style=${NARROW}><h4 class="segment-sub">Exited</h4>
          <${TimeChart} answer=${chart("exited")} title="Exited" bars=${true} /></div>
      </div>`;
  }}</${Panel}>`;
}

// -- members ------------------------------------------------------------------------------------------------

/** A page of members: a saved segment's own route, a tag's through a segment query of {tag: slug}. */
function membersPage(kind, slug, limit, cursor, signal) {
  if (kind === "segment") {
    return api(`/v1/segments/${encodeURIComponent(slug)}/members`, { params: { limit, cursor }, signal });
  }
  return api("/v1/segments/query", { method: "POST", body: { rule: { tag: slug }, limit, cursor: cursor || undefined },
    signal });
}

function csvField(text) {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** The CSV of every member: a segment's export route, or a tag's members page by page in the same columns. */
async function exportCsv(kind, slug) {
  if (kind === "segment") return api(`/v1/segments/${encodeURIComponent(slug)}/export`, { params: { format: "csv" } });
  const lines = ["profile_id,identifiers,traits"];
  let cursor = null;
  do {
    const page = await membersPage(kind, slug, EXPORT_PAGE, cursor);
    for (const m of page.members) {
      lines.push([m.profile_id, m.identifiers.join(" "), JSON.stringify(m.traits)].map(csvField).join(","));
    }
    cursor = page.next_cursor;
  } while (cursor);
  return `${lines.join("\r\n")}\r\n`;
}

/** Fetched with the key as Bearer and handed to the browser as a Blob: the key never goes in a link. */
function ExportButton({ kind, slug }) {
  const [state, setState] = useState({ busy: false, error: null });
  const download = async () => {
    setState({ busy: true, error: null });
    try {
      const text = await exportCsv(kind, slug);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      link.download = `${slug}.csv`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      setState({ busy: false, error: null });
    } catch (error) {
      setState({ busy: false, error });
    }
  };
  return html`<div class="export-action"><button type="button" onClick=${download} disabled=${state.busy}
      data-testid="export">${state.busy ? "Exporting…" : "Export CSV"}</button>
    ${state.error && html`<${Failed} error=${state.error} />`}</div>`;
}

function identifiersText(identifiers) {
  return identifiers.length > 3 ? `${identifiers.slice(0, 3).join(", ")} +${identifiers.length - 3}` : identifiers.join(", ");
}

function traitsText(traits) {
  return Object.entries(traits).slice(0, 4).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" · ");
}

const pages = (count) => Math.max(1, Math.ceil(count / PAGE));

function Members({ kind, slug }) {
  const [cursors, setCursors] = useState([null]); // the cursor of each page up to the one shown
  const cursor = cursors[cursors.length - 1];
  const result = useQuery(`members:${kind}:${slug}:${cursor}`, (signal) => membersPage(kind, slug, PAGE, cursor, signal),
    LIVE_KPIS);
  return html`<${Panel} result=${result}>${(page) => (!page.members.length
    ? html`<p class="state empty" data-testid="no-members">No members now: nobody matches the rule.</p>` : html`
    <p class="muted small" data-testid="member-count" data-value=${page.count}>
      ${`${fmt.number(page.count)} members · page ${fmt.number(cursors.length)} of ${fmt.number(pages(page.count))}`}</p>
    <div class="table-wrap"><table class="members-list" data-testid="members">
      <caption class="sr-only">Members</caption>
      <thead><tr><th scope="col">Profile</th><th scope="col">Identifiers and traits</th></tr></thead>
      <tbody>${page.members.map((m) => html`<tr data-testid="member" data-profile-id=${m.profile_id}>
        <th scope="row"><a href=${href("profile", { id: m.profile_id })} title=${m.profile_id}
          aria-label=${`Profile ${m.profile_id}`}>${m.profile_id.slice(0, 8)}…</a></th>
        <td class="member"><span>${identifiersText(m.identifiers)}</span>
          <span class="small muted">${traitsText(m.traits)}</span></td></tr>`)}</tbody>
    </table></div>
    <nav class="members-pager" aria-label="Member pages">
      <button type="button" disabled=${cursors.length < 2} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous page</button>
      <button type="button" disabled=${!page.next_cursor} onClick=${() => setCursors([...cursors, page.next_cursor])}>Next page</button>
    </nav>`)}</${Panel}>`;
}

// -- the page -----------------------------------------------------------------------------------------------

function Selected({ kind, slug, definitions, params }) {
  const d = (kind === "tag" ? definitions.tags : definitions.segments).find((x) => x.id === slug);
  if (!d) {
    return html`<${Section} title="Not found" id="selected-title"><div class="state failed" role="alert">
      <strong>There is no ${kind} “${slug}” in this workspace.</strong> Pick one from the list above.</div></${Section}>`;
  }
  return html`<${Section} title=${`${d.name || d.id} (${kind})`} id="selected-title"
      actions=${html`<${ExportButton} kind=${kind} slug=${slug} />`}>
    ${d.description && html`<p>${d.description}</p>`}
    <details class="rule"><summary>Rule, version ${fmt.number(d.rule_version)}${d.purpose ? ` · purpose ${d.purpose}` : ""}</summary>
      <pre>${JSON.stringify(d.rule, null, 2)}</pre></details>
    <h3 class="segment-sub">Over time</h3>
    <${History} kind=${kind} slug=${slug} params=${params} />
    <h3 class="segment-sub">Members</h3>
    <${Members} key=${`${kind}:${slug}`} kind=${kind} slug=${slug} />
  </${Section}>`;
}

export default function Segments({ params }) {
  const definitions = useDefinitions();
  const kind = params.kind === "segment" ? "segment" : "tag";
  const slug = params.slug || "";
  return html`
    <${Controls} params=${params} by=${false} filters=${false} dimensions=${[]} />
    <${Section} title="Tags and segments" id="definitions-title">
      <${Panel} result=${definitions}>${(d) => (!d.tags.length && !d.segments.length ? html`<${NoTags} />` : html`
        <div class="grid-2">
          <div style=${NARROW}><h3>Tags <span class="muted">(members)</span></h3>
            ${d.tags.length ? html`<${Picker} items=${d.tags} kind="tag" selected=${{ kind, slug }} params=${params}
              count=${(t) => t.members} />` : html`<p class="muted small">No tags yet. Define one with the admin key:</p>
              <pre class="small">${DEFINE_EXAMPLE(location.origin)}</pre>`}</div>
          <div style=${NARROW}><h3>Segments <span class="muted">(count now)</span></h3>
            ${d.segments.length ? html`<${Picker} items=${d.segments} kind="segment" selected=${{ kind, slug }}
              params=${params} count=${(s) => s.count} />` : html`<p class="muted small">No saved segments.</p>`}</div>
        </div>
        ${!slug && html`<p class="muted">Pick a tag or a segment to see its members over time and its members.</p>`}`)}
      </${Panel}>
    </${Section}>
    ${slug && (definitions.data ? html`<${Selected} kind=${kind} slug=${slug} definitions=${definitions.data} params=${params} />`
      : definitions.error ? null : html`<${Loading} />`)}`;
}
