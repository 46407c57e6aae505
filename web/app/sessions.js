// Sessions, on the Dashboard: find a user's sessions (GET /v1/sessions), disconnect one or all
// of them (POST /v1/disconnect) and remove one of a session's subscriptions (POST
// /v1/unsubscribe). Every call needs the admin key of the Dashboard's key field, sent as a
// header only (never in the address, where it would end up in logs and history).

import { $, el, time } from "./ui.js";

/** An HTTP error of the API, from its `{"error":{"code","message"}}` body when it has one. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function mountSessions(root) {
  const keyInput = $("dash-key");
  const rows = $("ses-rows");
  const result = $("ses-result");
  // What the table shows: the list is fetched again for it after every action, whatever the
  // user field says by then.
  let shown = null; // {user} once a list was asked for
  let busy = false;

  function say(text, cls = "") {
    result.className = `result ${cls}`;
    result.textContent = text;
  }

  function headers(json) {
    // The field (which the Dashboard fills from sessionStorage) rather than sessionStorage: the
    // Dashboard saves it only on `change`, and a key just typed should count.
    const key = keyInput.value.trim();
    const h = key ? { authorization: `Bearer ${key}` } : {};
    if (json) h["content-type"] = "application/json";
    return h;
  }

  async function api(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method,
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "unreachable", `no answer from the server (${err.message})`);
    }
    let answer = null;
    try {
      answer = await res.json();
    } catch {
      /* not JSON (e.g. a proxy's error page): the status says enough */
    }
    if (!res.ok) {
      throw new ApiError(res.status, answer?.error?.code || "http_error", answer?.error?.message || res.statusText || "request failed");
    }
    return answer;
  }

  function failed(what, err) {
    let hint = "";
    if (err.status === 401) hint = keyInput.value.trim() ? " — check the admin key" : " — enter the admin key";
    else if (err.status === 403) hint = " — this key is not an admin key";
    say(`${what}: ${err.status ? `HTTP ${err.status} ` : ""}${err.code}: ${err.message}${hint}`, "err");
    if (err.status === 401 || err.status === 403) {
      // The key field is folded away at the top of the page: show it where it is.
      const box = keyInput.closest("details");
      if (box) box.open = true;
      keyInput.focus();
    }
  }

  /** Disables the buttons while a call runs, so that one click is one call. */
  async function guarded(fn) {
    if (busy) return;
    busy = true;
    for (const b of root.querySelectorAll("button")) b.disabled = true;
    try {
      await fn();
    } finally {
      busy = false;
      for (const b of root.querySelectorAll("button")) b.disabled = false;
    }
  }

  function placeholder(text) {
    rows.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted", text })));
  }

  function chip(s, sub) {
    const label = sub.group ? `${sub.pattern} (group ${sub.group})` : sub.pattern;
    return el(
      "span",
      { class: "chip", dataset: sub.group ? { pattern: sub.pattern, group: sub.group } : { pattern: sub.pattern } },
      el("code", { text: sub.pattern }),
      sub.group ? el("span", { class: "flag", text: sub.group, title: "queue group" }) : null,
      el("button", {
        type: "button",
        title: `unsubscribe ${s.session} from ${label}`,
        "aria-label": `unsubscribe from ${label}`,
        text: "×",
        onclick: () => unsubscribe(s, sub, label),
      }),
    );
  }

  function row(s) {
    const state = s.connected ? "connected" : "detached";
    return el(
      "tr",
      { dataset: { session: s.session, user: s.user ?? "", connected: String(s.connected) } },
      el("td", {}, el("code", { text: s.session })),
      el("td", s.user ? { text: s.user } : { class: "muted", text: "anonymous" }),
      el("td", {}, el("span", {
        class: "state",
        dataset: { state },
        text: state,
        // A detached session waits for its client to resume it (up to session.ttl).
        title: s.connected ? "a socket is open" : "no socket: kept for a resume",
      })),
      el("td", {}, s.subscriptions.length
        ? el("div", { class: "chips" }, ...s.subscriptions.map((sub) => chip(s, sub)))
        : el("span", { class: "muted small", text: "none" })),
      el("td", { class: "actions" }, el("button", {
        type: "button",
        class: "plain danger",
        text: "Disconnect",
        title: `disconnect ${s.session}`,
        onclick: () => disconnect({ session: s.session }, `session ${s.session}`),
      })),
    );
  }

  /**
   * Fetches the list of `shown` again; false if that failed (then the page says so, after
   * `done`: what the action before it did, which did happen).
   */
  async function load(done = "") {
    const q = shown.user ? `?user=${encodeURIComponent(shown.user)}` : "";
    let list;
    try {
      list = await api("GET", `/v1/sessions${q}`);
    } catch (err) {
      failed(done ? `${done}; but cannot list the sessions again` : "cannot list the sessions", err);
      placeholder("–");
      $("ses-bar").hidden = true;
      return false;
    }
    const whose = shown.user ? `of ${shown.user}` : "(all users)";
    $("ses-summary").textContent = `${list.length} session${list.length === 1 ? "" : "s"} ${whose} · listed ${time()}`;
    $("ses-kick-user").hidden = !shown.user || list.length === 0;
    $("ses-kick-user").textContent = shown.user ? `Disconnect all of ${shown.user}` : "Disconnect all";
    $("ses-bar").hidden = false;
    if (list.length) rows.replaceChildren(...list.map(row));
    else placeholder(shown.user ? `${shown.user} has no sessions on this server.` : "No sessions on this server.");
    return true;
  }

  /** Whether the table still shows a session of `target` ({session} or {user}) as connected. */
  function stillConnected(target) {
    return [...rows.querySelectorAll('tr[data-connected="true"]')].some((tr) =>
      target.session ? tr.dataset.session === target.session : tr.dataset.user === target.user,
    );
  }

  async function disconnect(target, what) {
    await guarded(async () => {
      const resumable = $("ses-resumable").checked;
      let n;
      try {
        n = (await api("POST", "/v1/disconnect", { ...target, resumable })).disconnected;
      } catch (err) {
        failed(`cannot disconnect ${what}`, err);
        return;
      }
      const done = n
        ? `disconnected ${what}: ${n} session${n === 1 ? "" : "s"}${resumable ? " (resumable)" : ""}`
        : `nothing to disconnect for ${what}: already gone`;
      let listed = await load(done);
      // A kept (resumable) session lets go of its socket a moment after the server asked it
      // to close: list again, briefly, until it shows as detached.
      for (let i = 0; listed && resumable && n && i < 5 && stillConnected(target); i += 1) {
        await new Promise((r) => setTimeout(r, 200));
        listed = await load(done);
      }
      if (listed) say(done, n ? "ok" : "");
    });
  }

  async function unsubscribe(s, sub, label) {
    await guarded(async () => {
      const body = { session: s.session, pattern: sub.pattern };
      if (sub.group) body.group = sub.group;
      let n;
      try {
        n = (await api("POST", "/v1/unsubscribe", body)).unsubscribed;
      } catch (err) {
        failed(`cannot unsubscribe ${s.session} from ${label}`, err);
        return;
      }
      const done = n ? `unsubscribed ${s.session} from ${label}` : `${s.session} was no longer subscribed to ${label}`;
      if (await load(done)) say(done, n ? "ok" : "");
    });
  }

  $("ses-find").addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(async () => {
      shown = { user: $("ses-user").value.trim() };
      if (await load()) say("");
    });
  });

  $("ses-kick-user").addEventListener("click", () => {
    if (shown?.user) disconnect({ user: shown.user }, `user ${shown.user}`);
  });
}
