// The dashboard's shell: sign-in with a read key, the navigation, the live/paused state, the page.
import { ApiError, clearKey, getKey, signIn } from "./api.js";
import { Failed, Loading } from "./components.js";
import * as fmt from "./format.js";
import { html, render, useEffect, useState } from "./lib.js";
import { setPaused, start, stop, useLive } from "./live.js";
import { href, useRoute } from "./route.js";

export const PAGES = [
  ["overview", "Overview"], ["sales", "Sales"], ["service", "Service"], ["marketing", "Marketing"],
  ["customers", "Customers"], ["segments", "Segments and tags"], ["profile", "Profile"],
];

function SignIn({ reason }) {
  const [error, setError] = useState(reason || null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    const key = new FormData(event.target).get("key").trim();
    if (!key) { setError(new ApiError(0, "missing_key", "Paste the read key that `cdp up` printed.")); return; }
    setBusy(true);
    try {
      await signIn(key);
      location.reload();
    } catch (err) {
      setError(err.status === 401 ? new ApiError(401, err.code, `${err.message} Use the read key (cdp keys show).`) : err);
      setBusy(false);
    }
  };
  return html`<main class="sign-in"><form onSubmit=${submit} aria-labelledby="sign-in-title">
    <h1 id="sign-in-title">cdp dashboard</h1>
    <p>Sign in with the workspace's <strong>read key</strong>: <code>cdp up</code> printed it, <code>cdp keys show</code>
      prints it again. It stays in this tab only.</p>
    <label for="key">Read key</label>
    <input id="key" name="key" type="password" autocomplete="off" autofocus required />
    <button type="submit" disabled=${busy}>${busy ? "Checking…" : "Sign in"}</button>
    ${error && html`<${Failed} error=${error} />`}
  </form></main>`;
}

function LiveBadge() {
  const live = useLive();
  const label = { live: "Live", paused: "Paused", connecting: "Connecting", reconnecting: "Reconnecting" }[live.mode];
  return html`<div class="live">
    <button type="button" class=${`badge ${live.mode}`} aria-pressed=${live.paused ? "false" : "true"}
      title=${live.error || (live.paused ? "Resume live updates" : "Pause live updates")}
      onClick=${() => setPaused(!live.paused)} data-testid="live-state">● ${label}</button>
    ${live.status && html`<span class="muted small" aria-live="off">${fmt.number(live.status.events_per_second, 1)} events/s</span>`}
  </div>`;
}

function Page({ route }) {
  const [module, setModule] = useState(null);
  const [failed, setFailed] = useState(null);
  useEffect(() => {
    let current = true;
    setModule(null);
    setFailed(null);
    import(`./pages/${route.page}.js`).then((m) => current && setModule(m),
      () => current && setFailed(new ApiError(404, "unknown_page", `There is no page "${route.page}".`)));
    return () => { current = false; };
  }, [route.page]);
  if (failed) return html`<${Failed} error=${failed} />`;
  if (!module) return html`<${Loading} />`;
  const View = module.default;
  return html`<${View} params=${route.params} />`;
}

function App() {
  const route = useRoute();
  const [reason, setReason] = useState(null);
  const [signedIn, setSignedIn] = useState(Boolean(getKey()));
  useEffect(() => {
    const out = (event) => { clearKey(); stop(); setReason(event.detail); setSignedIn(false); };
    window.addEventListener("cdp:signed-out", out);
    return () => window.removeEventListener("cdp:signed-out", out);
  }, []);
  useEffect(() => { if (signedIn) start(); }, [signedIn]);
  const title = (PAGES.find(([id]) => id === route.page) || [null, route.page])[1];
  useEffect(() => { document.title = `${signedIn ? title : "Sign in"} · cdp dashboard`; }, [title, signedIn]);
  if (!signedIn) return html`<${SignIn} reason=${reason} />`;
  return html`<a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <span class="brand">cdp</span>
      <nav aria-label="Pages"><ul>${PAGES.map(([id, label]) => html`<li>
        <a href=${href(id, keepView(route.params))} aria-current=${route.page === id ? "page" : undefined}>${label}</a></li>`)}
      </ul></nav>
      <${LiveBadge} />
      <button type="button" class="link" onClick=${() => { clearKey(); stop(); setSignedIn(false); }}>Sign out</button>
    </header>
    <main id="main" tabindex="-1"><h1>${title}</h1><${Page} route=${route} /></main>`;
}

/** The time range travels from page to page; the rest of a view belongs to its page. */
function keepView(params) {
  const { range, from, to } = params;
  return { range, from, to };
}

render(html`<${App} />`, document.getElementById("app"));
