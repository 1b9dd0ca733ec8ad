// Loading data from the query API: one hook that fetches, keeps the last answer while fetching again,
// and fetches again when the live feed says one of the KPIs it shows moved.
import { api } from "./api.js";
import { useCallback, useEffect, useRef, useState } from "./lib.js";
import { useKpiUpdates } from "./live.js";
import { kpiParams } from "./route.js";

const REFRESH_DELAY_MS = 150; // one fetch for a burst of updates

/** `load(signal)` run when `key` changes and after each live update of one of `kpis`. */
export function useQuery(key, load, kpis = []) {
  const [result, setResult] = useState({ data: null, error: null, loading: true });
  const [version, setVersion] = useState(0);
  const timer = useRef(null);
  useEffect(() => {
    const controller = new AbortController();
    setResult((r) => ({ ...r, loading: true }));
    load(controller.signal).then(
      (data) => setResult({ data, error: null, loading: false }),
      (error) => { if (error.name !== "AbortError") setResult({ data: null, error, loading: false }); },
    );
    return () => controller.abort();
  }, [key, version]);
  const refresh = useCallback(() => {
    clearTimeout(timer.current);
    timer.current = setTimeout(() => setVersion((v) => v + 1), REFRESH_DELAY_MS);
  }, []);
  useKpiUpdates(kpis, refresh);
  return result;
}

/** One KPI's answer for the view's period, granularity, dimension and filters (`extra` overrides). */
export function useKpi(name, params, extra = {}, dimensions) {
  const query = { ...kpiParams(params, dimensions ? { dimensions } : undefined), ...extra };
  return useQuery(`${name}?${new URLSearchParams(query)}`,
    (signal) => api(`/v1/kpis/${name}`, { params: query, signal }), [name]);
}

/** A KPI over the whole period and over the one before it (one request), and its series: a headline card. */
export function useHeadline(name, params, dimensions) {
  const query = kpiParams(params, dimensions ? { dimensions } : undefined);
  return useQuery(`headline:${name}?${new URLSearchParams(query)}`, async (signal) => {
    const [totals, series] = await Promise.all([
      api(`/v1/kpis/${name}`, { params: { ...query, granularity: "total", compare: "previous" }, signal }),
      api(`/v1/kpis/${name}`, { params: query, signal }),
    ]);
    return { now: totals.series, previous: totals.previous.series, series: series.series, unit: series.unit,
      granularity: query.granularity };
  }, [name]);
}

/** Rows of a KPI answer split into series: one per value of the dimension and currency. */
export function splitSeries(rows, by, fallback = "value") {
  const out = new Map();
  for (const row of rows) {
    const parts = [];
    if (by) parts.push(row[by] === "" || row[by] === null ? "(none)" : String(row[by]));
    if (row.currency) parts.push(row.currency);
    const key = parts.join(" · ") || fallback;
    if (!out.has(key)) out.set(key, { key, currency: row.currency, rows: [] });
    out.get(key).rows.push(row);
  }
  return [...out.values()];
}
