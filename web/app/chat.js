// The Chat: rooms are topics `chat/<room>`, with history on joining and a member list.
//
// Membership comes from the server's presence (`presence` op and `$presence/chat/<room>` join
// and leave events); nicknames are the chat's own business, announced on a side topic
// `chat/<room>/roster` (`hello` on joining, answered by `here` from everyone present, `bye` on
// leaving). On a server without presence or history the chat still works: the member list is
// built from the roster alone and the room starts empty.
//
// When the connection comes back on a new session (the server restarted, or kept the session
// too briefly), herald.js subscribes again `since` the last message shown, so the room catches
// up from the server's history without repeating anything; what history no longer holds is shown
// as a line (a topic gap).
//
// With an application backend (`?backend=http://127.0.0.1:9000` in the address, then kept in
// localStorage; `?backend=` forgets it), the backend says who you are: the chat logs in there
// (POST /login sets an HttpOnly cookie for this host, which the browser sends with the
// WebSocket upgrade to Herald too: cookies are per host, not per port), and Herald's connect
// proxy asks the backend what the cookie is worth. Messages come back as the backend rewrote
// them, with `from` set to the sender. See examples/chat_backend.rs.

import { connect } from "/herald.js";
import { $, el, colorFor, errorText, stickToBottom, time } from "./ui.js";

const HISTORY = 50;

/** The backend's base URL, or null: `?backend=` wins and is remembered. */
function backendUrl() {
  const param = new URLSearchParams(location.search).get("backend");
  if (param !== null) {
    const url = param.trim().replace(/\/+$/, "");
    if (url) localStorage.setItem("herald.backend", url);
    else localStorage.removeItem("herald.backend");
  }
  return localStorage.getItem("herald.backend");
}

export function mountChat(root, getBus) {
  const joinForm = $("chat-join");
  const roomView = $("chat-room-view");
  const log = $("chat-log");
  const nickInput = $("chat-nick");
  const roomInput = $("chat-room");
  const text = $("chat-text");

  nickInput.value = localStorage.getItem("herald.nick") || "";
  roomInput.value = localStorage.getItem("herald.room") || "general";

  let room = null; // the joined room's state, or null

  const backend = backendUrl();
  let account = null; // with a backend: the logged-in name, or null
  let ownBus = null; // with a backend: the chat's own connection (a promise), or null
  // With a backend, `from` is who sent it (the backend sets it on every publish); a `nick`
  // is only what the sender's page claims.
  const senderOf = (d) => (backend && d.from) || d.nick;

  function line(message, cls = "") {
    stickToBottom(log, () => log.append(el("div", { class: `chat-sys ${cls}`, text: message })));
  }

  function nameOf(session, client) {
    if (room.names.has(session)) return room.names.get(session);
    if (client && client.info && typeof client.info === "object" && client.info.name) return String(client.info.name);
    if (client && client.user) return String(client.user);
    return `guest-${String(session).slice(-4)}`;
  }

  function renderMembers() {
    const list = $("chat-members");
    const mine = room.bus.session;
    const items = [...room.members.entries()]
      .map(([session, client]) => ({ session, name: nameOf(session, client) }))
      .sort((a, b) => a.name.localeCompare(b.name));
    list.replaceChildren(
      ...items.map(({ session, name }) =>
        el("li", { dataset: { session } }, el("span", { text: name, style: `color:${colorFor(name)}` }), session === mine ? el("span", { class: "muted small", text: "(you)" }) : null),
      ),
    );
    $("chat-members-count").textContent = String(items.length);
    $("chat-count").textContent = `${items.length} here`;
  }

  /**
   * Inserts a chat message in offset order (history may arrive after live messages), once: the
   * key is epoch and offset, since a server that lost the room's history counts from 1 again.
   */
  function renderMessage(m, earlier) {
    const key = `${m.epoch}:${m.offset}`;
    if (room.seen.has(key)) return;
    room.seen.add(key);
    const d = m.data && typeof m.data === "object" ? m.data : { text: String(m.data) };
    const nick = String(senderOf(d) || "anonymous");
    if (d.session && senderOf(d) && !room.names.has(d.session)) room.names.set(d.session, nick);
    const node = el(
      "div",
      { class: `chat-msg${d.session && d.session === room.bus.session ? " mine" : ""}${earlier ? " earlier" : ""}`, dataset: { offset: m.offset, epoch: m.epoch } },
      el("span", { class: "who", text: nick, style: `color:${colorFor(nick)}` }),
      el("span", { class: "when", text: time(m.ts) }),
      el("span", { class: "text", text: String(d.text ?? "") }),
    );
    stickToBottom(log, () => {
      // Only within an epoch: a new epoch's messages come after everything of the old one.
      const later = [...log.querySelectorAll(".chat-msg")].find((n) => n.dataset.epoch === String(m.epoch) && Number(n.dataset.offset) > m.offset);
      if (later) log.insertBefore(node, later);
      else log.append(node);
    });
  }

  function onRoster(m) {
    const d = m.data || {};
    if (!d.session || d.session === room.bus.session) return;
    const known = room.names.get(d.session);
    const nick = senderOf(d);
    if (nick) room.names.set(d.session, String(nick));
    if (d.type === "hello") {
      line(`${nick} joined`);
      // Tell the newcomer who we are (they may have joined after our own hello).
      room.bus.publish(room.roster, { type: "here", session: room.bus.session, nick: room.nick }).catch(() => {});
    }
    if (d.type === "bye") {
      // With presence, the server's leave event says it (also for tabs closed without a bye).
      if (!room.presence && room.members.delete(d.session)) line(`${known || nick} left`);
    } else if (!room.presence) {
      room.members.set(d.session, null);
    }
    renderMembers();
  }

  function onPresence(m) {
    const e = m.data || {};
    if (e.event === "join") room.members.set(e.session, { user: e.user, info: e.info });
    if (e.event === "leave" && room.members.has(e.session)) {
      const name = nameOf(e.session, room.members.get(e.session));
      room.members.delete(e.session);
      if (e.session !== room.bus.session) line(`${name} left`);
    }
    renderMembers();
  }

  async function loadPresence() {
    const snapshot = await room.bus.presence(room.topic);
    room.members = new Map(snapshot.clients.map((c) => [c.session, c]));
    room.members.set(room.bus.session, room.members.get(room.bus.session) || null);
    renderMembers();
  }

  async function join(nick, name) {
    const bus = await chatBus();
    room = {
      bus,
      nick,
      name,
      topic: `chat/${name}`,
      roster: `chat/${name}/roster`,
      members: new Map([[bus.session, null]]),
      names: new Map([[bus.session, nick]]),
      seen: new Set(), // `${epoch}:${offset}` of the messages shown
      presence: false,
      unsubs: [],
      off: [],
    };
    const r = room;
    log.replaceChildren();
    $("chat-title").textContent = `#${name}`;
    joinForm.hidden = true;
    roomView.hidden = false;
    renderMembers();

    const onGap = (g) => {
      if (room !== r) return;
      const n = g.to_offset - g.from_offset + 1;
      if (g.reason === "epoch") {
        line(`The server lost this room's history: messages sent while you were away may be missing${n > 0 ? ` (${n} of them for sure)` : ""}.`, "err");
      } else {
        line(`${n} message${n === 1 ? " was" : "s were"} sent while you were away and could not be recovered (no longer in the room's history).`, "err");
      }
    };
    r.unsubs.push(await bus.subscribe(r.topic, (m) => renderMessage(m, false), { onGap }));
    r.unsubs.push(await bus.subscribe(r.roster, onRoster));

    const note = $("chat-members-note");
    note.hidden = true;
    try {
      r.unsubs.push(await bus.subscribe(`$presence/${r.topic}`, onPresence));
      r.presence = true;
      await loadPresence();
    } catch (err) {
      r.presence = false;
      note.textContent = `Presence is not available on this server (${err.code || err.message}); showing who announced themselves.`;
      note.hidden = false;
    }
    await bus.publish(r.roster, { type: "hello", session: bus.session, nick });

    try {
      const h = await bus.history(r.topic, { limit: HISTORY });
      for (const m of h.messages) renderMessage({ ...m, epoch: h.epoch }, true);
      if (h.messages.length) line(`↑ ${h.messages.length} earlier message${h.messages.length === 1 ? "" : "s"} from the room's history`);
    } catch (err) {
      line(`No history for this room (${err.code || err.message}).`);
    }
    line(`You joined #${name} as ${nick}.`);

    r.off.push(
      bus.on("close", (e) => e.willReconnect && line("Connection lost, reconnecting…", "err")),
      bus.on("open", async (e) => {
        if (room !== r) return;
        if (e.resumed) {
          line("Reconnected: nothing was missed.");
          return;
        }
        // A new session: the client subscribes again and catches up from the room's history
        // (the `recovered` event says how that went); announce ourselves and refresh.
        r.members.delete(e.previousSession);
        r.names.set(bus.session, r.nick);
        bus.publish(r.roster, { type: "hello", session: bus.session, nick: r.nick }).catch(() => {});
        if (r.presence) loadPresence().catch(() => {});
        else r.members.set(bus.session, null);
        renderMembers();
      }),
      bus.on("recovered", (e) => {
        if (room !== r || e.pattern !== r.topic) return;
        if (e.recovered) line("Reconnected: nothing was missed.");
        else line("Reconnected with a new session; some messages may have been missed.", "err");
      }),
      // Session gaps only: a topic gap of the room comes to `onGap` above.
      bus.on("gap", (g) => g.topic === undefined && line(`${g.to_seq - g.from_seq + 1} message(s) were lost (${g.reason}).`, "err")),
    );
    text.focus();
  }

  async function leave() {
    const r = room;
    if (!r) return;
    room = null;
    r.off.forEach((off) => off());
    r.bus.publish(r.roster, { type: "bye", session: r.bus.session, nick: r.nick }).catch(() => {});
    await Promise.allSettled(r.unsubs.map((u) => u()));
    roomView.hidden = true;
    joinForm.hidden = false;
  }

  // ---- with a backend: logging in and out ---------------------------------------------------

  const loginForm = $("chat-login");
  const loginError = $("chat-login-error");

  /** A JSON call to the backend, with its cookie; throws with the backend's error. */
  async function call(method, path, body) {
    const res = await fetch(`${backend}${path}`, {
      method,
      credentials: "include",
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = res.status === 204 ? {} : await res.json().catch(() => ({}));
    if (!res.ok) throw Object.assign(new Error(answer.error || `${res.status} ${res.statusText}`), { status: res.status });
    return answer;
  }

  /**
   * Without a backend, the page's shared connection. With one, the chat's own: what a
   * connection may do is settled when it connects, so logging out closes it and the next
   * login opens a new one.
   */
  function chatBus() {
    if (!backend) return getBus();
    if (!ownBus) {
      const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
      const mine = connect(wsUrl, { client: { app: "herald-web-chat" } }).then(
        (bus) => {
          showConn("open", "connected");
          bus.on("open", () => showConn("open", "connected"));
          bus.on("close", (e) => {
            if (ownBus !== mine) return; // closed by logout()
            if (e.willReconnect) return showConn("reconnecting", "reconnecting…");
            // Refused for good (e.g. the login is no longer valid): log in again.
            ownBus = null;
            showConn("closed", `closed (${e.code})`);
            leave().then(() => showAccount(null, `Disconnected: ${e.reason || e.code}`));
          });
          return bus;
        },
        (err) => {
          ownBus = null;
          showConn("error", err.closeCode === 4001 ? "refused" : "cannot connect");
          throw err;
        },
      );
      ownBus = mine;
    }
    return ownBus;
  }

  /** The header's connection indicator, for the chat's own connection. */
  function showConn(state, text) {
    $("conn").dataset.state = state;
    $("conn").textContent = text;
  }

  /** Shows the login form (`name` null, with `error` if any) or the join form as `name`. */
  function showAccount(name, error) {
    account = name;
    loginForm.hidden = Boolean(name) || room !== null;
    joinForm.hidden = !name || room !== null;
    $("chat-account-name").textContent = name || "";
    loginError.textContent = error || "";
    loginError.hidden = !error;
  }

  async function logout() {
    await leave();
    const bus = ownBus;
    ownBus = null;
    if (bus) bus.then((b) => b.close(), () => {});
    showConn("idle", "not connected");
    try {
      await call("POST", "/logout");
      showAccount(null);
    } catch (err) {
      showAccount(null, `Could not log out: ${errorText(err)}`);
    }
  }

  if (backend) {
    $("chat-backend-url").textContent = backend;
    $("chat-account").hidden = false;
    $("chat-nick-field").hidden = true;
    nickInput.required = false;
    $("chat-room-logout").hidden = false;
    $("chat-login-name").value = localStorage.getItem("herald.nick") || "";
    joinForm.hidden = true;
    // The cookie is HttpOnly: only the backend can say whether we are still logged in.
    call("GET", "/me").then(
      (me) => showAccount(me.user || null),
      (err) => showAccount(null, `The backend at ${backend} does not answer: ${errorText(err)}`),
    );
    loginForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = $("chat-login-name").value.trim();
      $("chat-login-btn").disabled = true;
      try {
        const me = await call("POST", "/login", { name });
        localStorage.setItem("herald.nick", me.user);
        // Connect now: a cookie the browser did not keep (a page on `localhost` and a
        // backend on `127.0.0.1` are different hosts) shows here, as Herald's refusal.
        await chatBus();
        showAccount(me.user);
        roomInput.focus();
      } catch (err) {
        showAccount(null, `Could not log in: ${errorText(err)}`);
      } finally {
        $("chat-login-btn").disabled = false;
      }
    });
    $("chat-logout").addEventListener("click", () => logout());
    $("chat-room-logout").addEventListener("click", () => logout());
  }

  // ---- joining ------------------------------------------------------------------------------

  joinForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const nick = backend ? account : nickInput.value.trim();
    const name = roomInput.value.trim();
    if (!nick || !/^[A-Za-z0-9_-]+$/.test(name)) return;
    if (!backend) localStorage.setItem("herald.nick", nick);
    localStorage.setItem("herald.room", name);
    $("chat-join-btn").disabled = true;
    try {
      await join(nick, name);
    } catch (err) {
      await leave();
      line(`Could not join: ${errorText(err)}`, "err");
      joinForm.hidden = false;
      alert(`Could not join: ${errorText(err)}`);
    } finally {
      $("chat-join-btn").disabled = false;
    }
  });

  $("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = text.value.trim();
    if (!value || !room) return;
    text.value = "";
    room.bus.publish(room.topic, { nick: room.nick, text: value, session: room.bus.session }).catch((err) => line(`Not sent: ${errorText(err)}`, "err"));
  });

  $("chat-leave").addEventListener("click", () => leave());
  // Closing the tab: say bye and unsubscribe now (the frames go out before the socket closes),
  // so others see the leave at once rather than when the session expires.
  window.addEventListener("pagehide", () => {
    if (room) leave();
  });

  return {
    visible(shown) {
      if (!shown || room) return;
      if (backend) (account ? roomInput : $("chat-login-name")).focus();
      else (nickInput.value ? roomInput : nickInput).focus();
    },
  };
}
