// The status page: fetches /status (the same view model as the JSON API) every few seconds
// and draws it. Built with DOM calls and textContent only: names and reasons come from model
// repositories and Triton, never trusted as HTML.
"use strict";

const REFRESH_MS = 5000;
const MB = "MB";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmtMb(mb) {
  if (mb === null || mb === undefined) return "-";
  return mb >= 1024 ? (mb / 1024).toFixed(1) + " GB" : mb.toFixed(0) + " " + MB;
}

function fmtS(s) {
  if (s === null || s === undefined) return "-";
  return s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(2) + " s";
}

function fmtTime(unix) {
  return unix ? new Date(unix * 1000).toLocaleTimeString() : "-";
}

function token() {
  const match = /(?:^|&)token=([^&]+)/.exec(location.hash.slice(1));
  if (match) {
    sessionStorage.setItem("warmctl-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);  // out of the address bar
  }
  return sessionStorage.getItem("warmctl-token");
}

function memoryBar(mem) {
  const limit = mem.budget_mb;
  const share = limit ? Math.min(1, mem.resident_mb / limit) : (mem.resident_mb > 0 ? 1 : 0);
  const label = limit === 0 && !mem.resident_mb ? mem.level + ": none here" :
    mem.level + ": " + fmtMb(mem.resident_mb) + " of " +
    (limit === null ? "no budget set" : fmtMb(limit));
  const kind = limit === null ? " unlimited" : limit && mem.resident_mb > limit ? " over" : "";
  return el("div", {class: "bar" + kind,
                    "data-level": mem.level, title: label},
            el("div", {style: "width:" + (share * 100).toFixed(1) + "%"}),
            el("span", {}, label));
}

function drawInstances(view) {
  const box = document.getElementById("instances");
  box.replaceChildren(...view.instances.map(inst => el("div",
    {class: "card", "data-instance": inst.name},
    el("div", {}, el("strong", {}, inst.name), " ",
       el("span", {class: "badge " + inst.triton, "data-field": "triton"}, inst.triton)),
    el("div", {class: "why"}, inst.triton_reason || ""),
    el("div", {class: "muted"}, "restarts in window: " + inst.restarts_in_window +
       (inst.metrics_url ? " \u00b7 Triton metrics: " + inst.metrics_url : "")),
    ...inst.memory.map(memoryBar))));
}

function drawInstanceTable(view) {
  const rows = view.instances.map(inst => el("tr", {"data-instance": inst.name},
    el("td", {"data-field": "name"}, el("strong", {}, inst.name), " ",
       el("span", {class: "muted"}, inst.provider)),
    el("td", {}, el("span", {class: "badge " + inst.triton, "data-field": "state"},
                    inst.triton)),
    el("td", {"data-field": "routing"},
       inst.draining ? "draining" : inst.routable ? "routable" : "not routable",
       // replicas out of routing after a failed health check, with why
       ...Object.entries(inst.unhealthy || {}).map(([model, why]) =>
         el("div", {class: "why", "data-field": "unhealthy"}, model + " unhealthy: " + why))),
    el("td", {class: "num", "data-field": "outstanding"}, inst.outstanding),
    el("td", {class: "num", "data-field": "memory"}, fmtMb(inst.memory_used_mb) + " / " +
       (inst.memory_budget_mb === null ? "unlimited" : fmtMb(inst.memory_budget_mb))),
    el("td", {"data-field": "models"}, Object.entries(inst.models)
       .map(([name, state]) => name + (state === "ready" ? "" : " (" + state + ")"))
       .join(", ") || "-"),
    el("td", {"data-field": "planned"}, inst.planned.join(", ") || "-")));
  document.querySelector("#instance-table tbody").replaceChildren(...rows);
}

function lastLoad(load) {
  if (!load) return el("td", {class: "muted"}, "never");
  const total = load.duration_s || 0;
  const parts = [load.triton_s || 0, load.warmup_s || 0, load.probe_s || 0];
  const bar = el("div", {class: "phases", title: "Triton / warm-up / probes"},
    ...parts.map(p => el("div", {style: "width:" + (total ? 100 * p / total : 0) + "%"})));
  return el("td", {"data-field": "last_load"},
    el("div", {}, fmtS(load.duration_s) + " (" + load.trigger + ", " +
       (load.outcome || "running") + ")"),
    el("div", {class: "why"}, "Triton " + fmtS(load.triton_s) + " \u00b7 warm-up " +
       fmtS(load.warmup_s) + " \u00b7 probes " + fmtS(load.probe_s)),
    bar);
}

function replicasCell(m) {
  // replicas: the Triton instances the model is ready on, against the replica plan's
  // number when there is a plan; each replica runs instance_group's count of model instances
  const planned = m.planned_replicas === null ? "" : " / " + m.planned_replicas + " planned";
  return el("td", {},
    el("div", {"data-field": "replicas", style: "white-space: nowrap"},
       m.replicas + " ready" + planned),
    m.instances_per_replica === null ? null :
      el("div", {class: "why", "data-field": "instances_per_replica"},
         m.instances_per_replica + " instance" + (m.instances_per_replica === 1 ? "" : "s") +
         " per replica"));
}

function drawModels(view) {
  const rows = view.models.map(m => el("tr", {"data-model": m.name},
    el("td", {}, el("strong", {}, m.name), " ",
       m.pinned ? el("span", {class: "badge pin"}, "pinned") : "",
       m.held && !m.pinned ? el("span", {class: "badge pin"}, "held") : "",
       el("div", {class: "why"}, m.reason || ""),
       m.unhealthy ? el("div", {class: "why", "data-field": "unhealthy"},
                        "unhealthy: " + m.unhealthy) : ""),
    el("td", {"data-field": "instance"}, m.instances.length > 1 ?
       m.instances.filter(r => r.state !== "cold")
         .map(r => r.instance + (r.unhealthy ? " (unhealthy)" :
                                 r.state === "ready" ? "" : " (" + r.state + ")"))
         .join(", ") || "-" : m.instance),
    el("td", {}, el("span", {class: "badge " + m.state, "data-field": "state"}, m.state)),
    el("td", {"data-field": "level"}, m.level),
    replicasCell(m),
    el("td", {class: "num", "data-field": "memory"}, fmtMb(m.memory_mb)),
    lastLoad(m.last_load),
    el("td", {class: "num", "data-field": "requests"}, m.requests),
    el("td", {class: "num", "data-field": "cold_starts"}, m.cold_starts),
    el("td", {}, el("div", {"data-field": "decision"}, m.decision || "-"),
       el("div", {class: "why"}, m.why || "")),
    el("td", {"data-field": "preload_at"}, fmtTime(m.preload_at))));
  document.querySelector("#models tbody").replaceChildren(...rows);
}

function drawHeatmap(view) {
  const peak = Math.max(1, ...view.models.flatMap(m => m.per_minute));
  document.getElementById("window").textContent =
    "(last " + view.minutes + " min, darkest = " + peak + "/min)";
  const rows = view.models.map(m => el("div", {class: "hrow", "data-model": m.name},
    el("span", {class: "name"}, m.name),
    el("div", {class: "cells"}, ...m.per_minute.map((n, i) => {
      const at = new Date((view.first_minute + i) * 60000).toLocaleTimeString();
      const shade = n ? 0.15 + 0.85 * n / peak : 0;
      return el("i", {title: at + ": " + n,
                      style: n ? "background: rgba(58,111,216," + shade.toFixed(2) + ")" : ""});
    }))));
  document.getElementById("heatmap").replaceChildren(...rows);
}

function drawLists(view) {
  const preloads = view.next_preloads.map(([model, at]) =>
    el("li", {}, model + " at " + fmtTime(at)));
  document.getElementById("preloads").replaceChildren(
    ...(preloads.length ? preloads : [el("li", {class: "muted"}, "none scheduled")]));
  const rollouts = view.rollouts.map(r => el("li", {}, JSON.stringify(r)));
  document.getElementById("rollouts").replaceChildren(
    ...(rollouts.length ? rollouts : [el("li", {class: "muted"}, "none in progress")]));
}

async function refresh() {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const error = document.getElementById("error");
  try {
    const response = await fetch("/status?minutes=180", {headers, cache: "no-store"});
    if (response.status === 401) {
      document.getElementById("login").hidden = false;
      throw new Error("a read token is needed");
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    drawInstances(body);
    drawInstanceTable(body);
    drawModels(body);
    drawHeatmap(body);
    drawLists(body);
    error.hidden = true;
    document.getElementById("updated").textContent =
      "updated " + new Date(body.at * 1000).toLocaleTimeString();
    document.body.dataset.loaded = String(body.at);
  } catch (exc) {
    error.textContent = String(exc.message || exc);
    error.hidden = false;
  }
}

document.getElementById("login").addEventListener("submit", event => {
  event.preventDefault();
  sessionStorage.setItem("warmctl-token", document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
