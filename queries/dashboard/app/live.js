// The live feed (GET /v1/live): a status each second and each KPI update as the platform publishes it.
// Pages listen for the KPIs they show and fetch those again; nothing polls.
import { stream } from "./api.js";
import { useEffect, useState } from "./lib.js";

const state = { mode: "connecting", status: null, paused: false, error: null };
const watchers = new Set(); // (state) => void
const kpiListeners = new Set(); // (message) => void
let controller = null;
let retry = 1000;

function changed(patch) {
  Object.assign(state, patch);
  for (const watch of watchers) watch({ ...state });
}

async function connect() {
  controller = new AbortController();
  const mine = controller;
  changed({ mode: "connecting" });
  try {
    await stream("/v1/live", (event, data) => {
      retry = 1000;
      if (event === "status") changed({ mode: "live", status: data, error: null });
      else if (event === "kpi") for (const listener of kpiListeners) listener(data);
    }, mine.signal);
  } catch (err) {
    if (mine.signal.aborted) return;
    changed({ error: err.message });
  }
  if (mine.signal.aborted || state.paused) return;
  changed({ mode: "reconnecting" });
  setTimeout(() => { if (!state.paused && controller === mine) connect(); }, retry);
  retry = Math.min(retry * 2, 15000);
}

export function start() {
  if (controller || state.paused) return;
  connect();
}

export function stop() {
  controller?.abort();
  controller = null;
}

export function setPaused(paused) {
  changed({ paused, mode: paused ? "paused" : "connecting" });
  if (paused) stop(); else start();
}

/** The feed's state: mode (live, paused, connecting, reconnecting), the last status, the last error. */
export function useLive() {
  const [current, setCurrent] = useState({ ...state });
  useEffect(() => { watchers.add(setCurrent); return () => watchers.delete(setCurrent); }, []);
  return current;
}

/** Calls `onUpdate(message)` for each KPI update of one of `names` while the feed is live. */
export function useKpiUpdates(names, onUpdate) {
  const key = names.join(",");
  useEffect(() => {
    const listener = (message) => { if (names.includes(message.kpi)) onUpdate(message); };
    kpiListeners.add(listener);
    return () => kpiListeners.delete(listener);
  }, [key, onUpdate]);
}
