// The web app's shell: tabs by URL hash, one shared Herald connection for the Chat and the
// Inspector (opened when one of them is first shown), and the connection indicator.

import { connect } from "/herald.js";
import { mountChat } from "./chat.js";
import { mountInspector } from "./inspector.js";
import { mountDashboard } from "./dashboard.js";
import { mountSessions } from "./sessions.js";
import { $ } from "./ui.js";

const origin = `${location.protocol}//${location.host}`;
const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
document.querySelectorAll(".ws-url").forEach((e) => (e.textContent = wsUrl));
document.querySelectorAll(".origin").forEach((e) => (e.textContent = origin));

// ---- the shared connection ---------------------------------------------------------------

const indicator = $("conn");
function showState(state, text) {
  indicator.dataset.state = state;
  indicator.textContent = text;
}

// A token for servers with [auth]: `?token=…` in the page URL, or the About tab's field; kept
// for this tab only (sessionStorage) and read again before every connection.
const fromUrl = new URLSearchParams(location.search).get("token");
if (fromUrl) sessionStorage.setItem("herald.token", fromUrl);
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("herald.token") || "";
tokenInput.addEventListener("change", () => {
  const t = tokenInput.value.trim();
  if (t) sessionStorage.setItem("herald.token", t);
  else sessionStorage.removeItem("herald.token");
  $("token-note").textContent = "Saved: used from the next connection on (reload the page to reconnect now).";
});
const token = () => sessionStorage.getItem("herald.token") || undefined;

let busPromise = null;
/** The page's one connection, opened on first use; retried on the next use if it failed. */
export function getBus() {
  if (!busPromise) {
    showState("connecting", "connecting…");
    busPromise = connect(wsUrl, { token, client: { app: "herald-web" } }).then(
      (bus) => {
        showState("open", "connected");
        bus.on("open", (e) => showState("open", e.resumed ? "connected (resumed)" : "connected"));
        bus.on("close", (e) =>
          e.willReconnect ? showState("reconnecting", "reconnecting…") : showState("closed", `closed (${e.code})`),
        );
        // For tests and for poking around in the console.
        window.herald = bus;
        return bus;
      },
      (err) => {
        busPromise = null;
        showState("error", err.closeCode === 4001 ? "token refused" : "cannot connect");
        throw err;
      },
    );
  }
  return busPromise;
}

// ---- views ---------------------------------------------------------------------------------

const views = {
  about: null,
  chat: mountChat($("view-chat"), getBus),
  inspector: mountInspector($("view-inspector"), getBus),
  dashboard: mountDashboard($("view-dashboard")),
};
// Part of the Dashboard's view (it shares its admin key), so not a view of its own.
mountSessions($("ses"));

function show() {
  const name = (location.hash || "#about").slice(1);
  const current = name in views ? name : "about";
  for (const section of document.querySelectorAll("section.view")) {
    section.hidden = section.dataset.view !== current;
  }
  for (const a of document.querySelectorAll(".tabs a")) {
    if (a.dataset.view === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [key, view] of Object.entries(views)) {
    if (view && view.visible) view.visible(key === current);
  }
}

window.addEventListener("hashchange", show);
show();
