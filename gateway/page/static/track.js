// Shipment tracking page: looks a shipment up through the public JSON API and shows it.
//
// The server renders every message hidden and puts the words for status codes into
// <data> elements; this script only fetches, fills in values and shows or hides parts.
// The state of the lookup is kept in data-state on <main> ("loading", "found",
// "not-found", "invalid", "unavailable"), which tests wait on.
"use strict";

(() => {
  const TERMINAL_STATUSES = new Set(["delivered", "not_delivered", "cancelled"]);
  const ACTIVE_TASK_STATES = new Set(["QUEUED", "RUNNING", "RETRYING"]);
  const MAX_TASKS = 5;
  const MAX_RETRY_S = 120;

  const root = document.getElementById("tracking");
  if (!root || !root.dataset.shipmentId) {
    return;
  }
  const shipmentId = root.dataset.shipmentId;
  const refreshS = Number(root.dataset.refreshS) || 10;
  const language = document.documentElement.lang || "en";
  const timeFormat = new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" });
  const words = new Map();
  for (const element of document.querySelectorAll("#words data")) {
    words.set(element.value, element.textContent);
  }
  let failures = 0;
  let refreshes = 0;

  class HttpError extends Error {
    constructor(status) {
      super(`HTTP ${status}`);
      this.status = status;
    }
  }

  function word(kind, code) {
    return words.get(`${kind}.${code}`) || String(code || "").replace(/_/g, " ");
  }

  function element(id) {
    return document.getElementById(id);
  }

  function show(id, visible) {
    element(id).hidden = !visible;
  }

  function formatTime(value) {
    const moment = new Date(value);
    return value && !Number.isNaN(moment.getTime()) ? timeFormat.format(moment) : "";
  }

  function span(className, text) {
    const node = document.createElement("span");
    node.className = className;
    node.textContent = text;
    return node;
  }

  async function getJson(path) {
    const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) {
      throw new HttpError(response.status);
    }
    return response.json();
  }

  async function loadTasks(history) {
    const ids = [];
    for (const event of [...history].reverse()) {
      if (event.taskId && !ids.includes(event.taskId)) {
        ids.push(event.taskId);
      }
    }
    const paths = ids.slice(0, MAX_TASKS).map((id) => `/api/status/tasks/${encodeURIComponent(id)}`);
    const settled = await Promise.allSettled(paths.map(getJson));
    return settled.filter((result) => result.status === "fulfilled").map((result) => result.value);
  }

  async function load() {
    const id = encodeURIComponent(shipmentId);
    const [status, shipment] = await Promise.all([
      getJson(`/api/status/shipments/${id}`),
      getJson(`/v1/shipments/${id}`),
    ]);
    const tasks = await loadTasks(shipment.history || []);
    return { status, shipment, tasks };
  }

  // The status read path and the system of record can differ for a moment after a
  // change; the one changed last is the current one.
  function newest(status, shipment) {
    const statusTime = Date.parse(status.updateTime || "") || 0;
    const shipmentTime = Date.parse(shipment.updateTime || "") || 0;
    return shipmentTime >= statusTime ? shipment : status;
  }

  function timelineItem(event) {
    const item = document.createElement("li");
    item.dataset.status = event.toStatus;
    const time = document.createElement("time");
    time.dateTime = event.occurredAt || "";
    time.textContent = formatTime(event.occurredAt);
    item.append(time, " ", span("event-status", word("status", event.toStatus)));
    if (event.toSubstatus) {
      item.append(" ", span("event-substatus", word("substatus", event.toSubstatus)));
    }
    if (!event.applied) {
      item.append(" ", span("event-note", words.get("note.not_applied")));
    } else if (event.late) {
      item.append(" ", span("event-note", words.get("note.late")));
    }
    return item;
  }

  function taskItem(task) {
    const item = document.createElement("li");
    item.dataset.state = task.state;
    const id = document.createElement("code");
    id.textContent = task.taskId;
    let text = word("task", task.state);
    if (ACTIVE_TASK_STATES.has(task.state)) {
      text += ` (${task.progressPercent || 0} %)`;
    }
    item.append(id, " ", span("task-state", text));
    return item;
  }

  function render({ status, shipment, tasks }) {
    const current = newest(status, shipment);
    const none = words.get("none");
    element("result-id").textContent = shipment.id;
    element("status").textContent = word("status", current.status);
    element("status").dataset.status = current.status;
    element("substatus").textContent = current.substatus ? word("substatus", current.substatus) : none;
    element("status-time").textContent = formatTime(current.statusTime) || none;
    element("tracking-number").textContent = shipment.trackingNumber || none;
    element("timeline").replaceChildren(...(shipment.history || []).map(timelineItem));
    element("tasks").replaceChildren(...tasks.map(taskItem));
    show("tasks-section", tasks.length > 0);
    const fallback = [status, ...tasks].some((answer) => answer.source === "SOURCE_FALLBACK");
    show("state-degraded", fallback);
    show("result", true);
    const moving = !TERMINAL_STATUSES.has(current.status);
    return moving || tasks.some((task) => ACTIVE_TASK_STATES.has(task.state));
  }

  function setState(state) {
    root.dataset.state = state;
    show("state-not-found", state === "not-found");
    show("state-invalid", state === "invalid");
    show("state-unavailable", state === "unavailable");
    show("state-loading", state === "loading");
  }

  // Returns the seconds until the next refresh, or 0 to stop refreshing.
  async function refresh() {
    try {
      const active = render(await load());
      failures = 0;
      setState("found");
      show("refresh-note", active);
      return active ? refreshS : 0;
    } catch (error) {
      if (error instanceof HttpError && (error.status === 404 || error.status === 400)) {
        show("result", false);
        setState(error.status === 404 ? "not-found" : "invalid");
        return 0;
      }
      failures += 1;
      setState("unavailable");
      show("state-degraded", false);
      return Math.min(refreshS * 2 ** (failures - 1), MAX_RETRY_S);
    }
  }

  async function cycle() {
    const delayS = await refresh();
    refreshes += 1;
    root.dataset.refreshes = String(refreshes);
    if (delayS > 0) {
      setTimeout(whenVisible, delayS * 1000);
    }
  }

  // A hidden tab does not poll; it refreshes once it is shown again.
  function whenVisible() {
    if (document.hidden) {
      document.addEventListener("visibilitychange", whenVisible, { once: true });
    } else {
      cycle();
    }
  }

  setState("loading");
  cycle();
})();
