// The Inspector: subscribe to any pattern and watch messages stream; publish from a form; ask
// the server for a topic's history, presence, a request's reply, or the topic list.

import { $, el, errorText, stickToBottom, time } from "./ui.js";

const MAX_ROWS = 500;

export function mountInspector(root, getBus) {
  const stream = $("ins-stream");
  const subs = new Map(); // pattern -> unsubscribe
  let count = 0;
  let bus = null;
  let hooked = false;

  function updateStats() {
    $("ins-stats").textContent = `${count} message${count === 1 ? "" : "s"}${$("ins-pause").checked ? " (paused)" : ""}`;
    if (bus) {
      $("ins-session").textContent = bus.session || "–";
      $("ins-lastseq").textContent = String(bus.lastSeq);
    }
  }

  function append(node) {
    stickToBottom(stream, () => {
      stream.append(node);
      while (stream.childElementCount > MAX_ROWS) stream.firstElementChild.remove();
    });
  }

  function sys(text, cls = "") {
    append(el("div", { class: `item sys ${cls}`, text: `${time()}  ${text}` }));
  }

  function onMessage(m) {
    count += 1;
    updateStats();
    if ($("ins-pause").checked) return;
    let data;
    try {
      data = JSON.stringify(m.data);
    } catch {
      data = String(m.data);
    }
    if (data.length > 4000) data = `${data.slice(0, 4000)}…`;
    const flags = ["retained", "replay", "redelivered"].filter((f) => m[f]);
    if (m.reply_to) flags.push("request");
    append(
      el(
        "div",
        { class: "item msg", dataset: { seq: m.seq, topic: m.topic } },
        el("span", { class: "seq", text: `#${m.seq}` }),
        el("span", { class: "topic", text: m.topic }, ...flags.map((f) => el("span", { class: "flag", text: f }))),
        el("span", { class: "meta", text: `@${m.offset} · ${time(m.ts)}` }),
        el("pre", { class: "data", text: data }),
      ),
    );
  }

  async function ready() {
    bus = await getBus();
    if (!hooked) {
      hooked = true;
      bus.on("gap", (g) =>
        g.topic !== undefined
          ? sys(`gap: ${g.topic} offsets ${g.from_offset}–${g.to_offset} not recovered (${g.reason}, epoch ${g.epoch})`, "err")
          : sys(`gap: seq ${g.from_seq}–${g.to_seq} lost (${g.reason})`, "err"),
      );
      bus.on("recovered", (e) => sys(`${e.pattern}: ${e.recovered ? "recovered everything missed" : "could not recover everything"}`, e.recovered ? "" : "err"));
      bus.on("close", (e) => sys(`connection closed (${e.code}${e.reason ? ` ${e.reason}` : ""})${e.willReconnect ? ", reconnecting…" : ""}`, "err"));
      bus.on("open", (e) => {
        sys(e.resumed ? `resumed session ${e.session}` : `new session ${e.session}; subscriptions sent again`);
        updateStats();
      });
      bus.on("error", (e) => sys(`error: ${errorText(e)}`, "err"));
      updateStats();
    }
    return bus;
  }

  function renderChips() {
    $("ins-subs").replaceChildren(
      ...[...subs.keys()].map((pattern) =>
        el(
          "span",
          { class: "chip", dataset: { pattern } },
          el("code", { text: pattern }),
          el("button", {
            type: "button",
            title: `unsubscribe ${pattern}`,
            "aria-label": `unsubscribe ${pattern}`,
            text: "×",
            onclick: async () => {
              const off = subs.get(pattern);
              subs.delete(pattern);
              renderChips();
              try {
                await off();
                sys(`unsubscribed ${pattern}`);
              } catch (err) {
                sys(`unsubscribe ${pattern}: ${errorText(err)}`, "err");
              }
            },
          }),
        ),
      ),
    );
  }

  $("ins-sub").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const pattern = $("ins-pattern").value.trim();
    if (!pattern || subs.has(pattern)) return;
    const rewind = $("ins-rewind").value.trim();
    try {
      const b = await ready();
      const off = await b.subscribe(pattern, onMessage, rewind ? { rewind: Number(rewind) } : {});
      subs.set(pattern, off);
      renderChips();
      sys(`subscribed ${pattern}${rewind ? ` (rewind ${rewind})` : ""}`);
    } catch (err) {
      sys(`subscribe ${pattern}: ${errorText(err)}`, "err");
    }
  });

  $("ins-pub").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const result = $("ins-pub-result");
    const topic = $("ins-topic").value.trim();
    let data;
    try {
      data = JSON.parse($("ins-data").value);
    } catch (err) {
      result.className = "result err";
      result.textContent = `data is not valid JSON: ${err.message}`;
      return;
    }
    const opts = {};
    if ($("ins-msgid").value.trim()) opts.msgId = $("ins-msgid").value.trim();
    if ($("ins-retain").checked) opts.retain = true;
    try {
      const b = await ready();
      const ack = await b.publish(topic, data, opts);
      result.className = "result ok";
      result.textContent = `published: offset ${ack.offset}, epoch ${ack.epoch}${ack.duplicate ? " (duplicate)" : ""}`;
    } catch (err) {
      result.className = "result err";
      result.textContent = errorText(err);
    }
  });

  const askOp = $("ins-ask-op");
  askOp.addEventListener("change", () => {
    $("ins-ask-data-row").hidden = askOp.value !== "request";
  });
  $("ins-ask").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const result = $("ins-ask-result");
    const answer = $("ins-ask-answer");
    const topic = $("ins-ask-topic").value.trim();
    result.className = "result";
    result.textContent = "…";
    answer.hidden = true;
    try {
      let value;
      if (askOp.value === "topics") {
        const res = await fetch(`/v1/topics${topic ? `?pattern=${encodeURIComponent(topic)}` : ""}`);
        value = await res.json();
        if (!res.ok) throw Object.assign(new Error(value.error?.message || res.statusText), { code: value.error?.code });
      } else {
        const b = await ready();
        if (askOp.value === "history") value = await b.history(topic, { limit: 100 });
        else if (askOp.value === "presence") value = await b.presence(topic);
        else value = await b.request(topic, JSON.parse($("ins-ask-data").value), { timeoutMs: 5000 });
      }
      result.className = "result ok";
      result.textContent = "ok";
      answer.textContent = JSON.stringify(value, null, 2);
      answer.hidden = false;
    } catch (err) {
      result.className = "result err";
      result.textContent = errorText(err);
    }
  });

  $("ins-clear").addEventListener("click", () => {
    stream.replaceChildren();
    count = 0;
    updateStats();
  });
  $("ins-pause").addEventListener("change", updateStats);

  return {
    visible(shown) {
      if (shown) ready().catch((err) => sys(`cannot connect: ${errorText(err)}`, "err"));
    },
  };
}
