// The view's state lives in the URL (#/page?range=30d&granularity=day&by=channel&channel=web), so a view
// can be shared, bookmarked and restored with the back button. The key never goes here.
import { useEffect, useState } from "./lib.js";

export const DIMENSIONS = ["channel", "campaign", "product", "owner", "category", "priority"];
export const PRESETS = [
  ["24h", "Last 24 hours", 1], ["7d", "Last 7 days", 7], ["30d", "Last 30 days", 30],
  ["90d", "Last 90 days", 90], ["12m", "Last 12 months", 365],
];
export const GRANULARITIES = ["day", "week", "month"];

export function parse(hash = location.hash) {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  return { page: path || "overview", params: Object.fromEntries(new URLSearchParams(query)) };
}

export function href(page, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const text = query.toString();
  return `#/${page}${text ? `?${text}` : ""}`;
}

export function useRoute() {
  const [route, setRoute] = useState(parse());
  useEffect(() => {
    const changed = () => setRoute(parse());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

/** Changes some of the view's parameters (null removes one), keeping the page and the others. */
export function setParams(patch) {
  const { page, params } = parse();
  location.hash = href(page, { ...params, ...patch });
}

/** The view's period [from, to) and the one just before it, of the same length. */
export function period(params, now = new Date()) {
  let from, to;
  if (params.range === "custom" && params.from && params.to) {
    from = new Date(params.from);
    to = new Date(params.to);
  } else {
    const days = (PRESETS.find(([key]) => key === params.range) || PRESETS[2])[2];
    to = new Date(Math.ceil(now.getTime() / 60000) * 60000); // to the minute: one view, one set of requests
    from = new Date(to.getTime() - days * 86400000);
  }
  const span = to.getTime() - from.getTime();
  return { from, to, previous: { from: new Date(from.getTime() - span), to: from } };
}

export const iso = (date) => date.toISOString();

/** The KPI request parameters of a view: period, granularity, dimension and the filters it names. */
export function kpiParams(params, { dimensions = DIMENSIONS } = {}) {
  const { from, to } = period(params);
  const out = { from: iso(from), to: iso(to), granularity: params.granularity || defaultGranularity(from, to) };
  if (params.by && dimensions.includes(params.by)) out.by = params.by;
  for (const dim of dimensions) if (params[dim]) out[dim] = params[dim];
  return out;
}

export function defaultGranularity(from, to) {
  const days = (to - from) / 86400000;
  return days > 180 ? "month" : days > 45 ? "week" : "day";
}
