// The station's page: log in, upload with tus (resumable, even across reloads), list, share
// (links with options, listed and revoked), keep in the cloud drive (or move back to the
// station), delete.  Plain browser JavaScript, no build step; tus-js-client is
// vendor/tus.min.js.
//
// Every request to /api/ and /files/ carries "X-Requested-With: station": the server takes it
// as proof that a cookie-authenticated request comes from this page (see web/session.py).
"use strict";

(() => {
  const PROOF = { "X-Requested-With": "station" };
  const ENDPOINT = new URL("/files/", location.href).href;
  // "?chunk=BYTES" sends uploads in PATCHes of that size (tests, or proxies with a body
  // limit); by default one PATCH carries the rest of the file.
  const CHUNK = Number(new URLSearchParams(location.search).get("chunk")) || Infinity;
  const SPEED_WINDOW_MS = 5000;

  const $ = (id) => document.getElementById(id);
  let me = null;                // /api/me's answer while logged in
  const active = new Set();     // upload entries on this page

  // -- formatting ------------------------------------------------------------------------

  function formatBytes(n) {
    if (!Number.isFinite(n)) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }

  function formatDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return "";
    seconds = Math.ceil(seconds);
    if (seconds < 60) return seconds + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + (seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  // The API may give times as ISO 8601 text or as Unix seconds.
  function toDate(value) {
    if (value === null || value === undefined || value === "") return null;
    const date = typeof value === "number" ? new Date(value < 1e12 ? value * 1000 : value)
      : new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function formatDate(date) {
    return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function timeElement(date) {
    const time = document.createElement("time");
    time.dateTime = date.toISOString();
    time.textContent = formatDate(date);
    return time;
  }

  function notify(message, isError = false) {
    const notice = $("notice");
    notice.textContent = message;
    notice.classList.toggle("is-error", isError);
  }

  // -- the JSON API ----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message || "HTTP " + status); this.status = status; }
  }

  async function api(method, path, body) {
    const init = { method, headers: { ...PROOF }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "The station cannot be reached: " + error.message);
    }
    if (!response.ok) {
      let text = (await response.text()).trim();
      try { text = JSON.parse(text).error || text; } catch (error) { /* plain text */ }
      if (response.status === 401 && path !== "/api/login") sessionEnded();
      throw new ApiError(response.status, text || response.status + " " + response.statusText);
    }
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    return type.includes("json") ? response.json() : response.text();
  }

  // -- views -----------------------------------------------------------------------------

  function showLogin(message) {
    me = null;
    $("station-view").hidden = true;
    $("account").hidden = true;
    $("login-view").hidden = false;
    $("login-error").textContent = message || "";
    $("address").focus();
  }

  function sessionEnded() {
    for (const entry of active) entry.pause("paused: log in again to continue");
    showLogin("Your session ended. Log in again; paused uploads continue from where they were.");
  }

  async function showStation() {
    $("login-view").hidden = true;
    $("station-view").hidden = false;
    $("account").hidden = false;
    $("who").textContent = me.address;
    showUsage();
    await Promise.all([refreshFiles(), refreshUnfinished()]);
  }

  // /api/me gives {address, station: {used, capacity}, cloud: {used, capacity}}.
  function showUsage() {
    const parts = [["Station", me.station], ["Cloud drive", me.cloud]]
      .filter(([, usage]) => usage)
      .map(([label, usage]) => {
        const capacity = usage.capacity ? " of " + formatBytes(usage.capacity) : "";
        return label + ": " + formatBytes(usage.used || 0) + capacity + " used";
      });
    $("usage").textContent = parts.join(" · ");
  }

  async function refreshMe() {
    me = await api("GET", "/api/me");
    showUsage();
  }

  async function start() {
    try {
      me = await api("GET", "/api/me");
    } catch (error) {
      showLogin(error.status === 401 ? "" : error.message);
      return;
    }
    await showStation();
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.target.querySelector("button[type=submit]");
    button.disabled = true;
    $("login-error").textContent = "";
    try {
      await api("POST", "/api/login", { address: $("address").value.trim(),
                                        password: $("password").value });
      $("password").value = "";
      me = await api("GET", "/api/me");
      notify("");
      await showStation();
      for (const entry of active) if (entry.state === "paused") entry.resume();
    } catch (error) {
      $("login-error").textContent = error.status === 401
        ? "Wrong address or password." : "Could not log in: " + error.message;
    } finally {
      button.disabled = false;
    }
  });

  $("logout").addEventListener("click", async () => {
    for (const entry of active) entry.pause("paused: logged out");
    try { await api("POST", "/api/logout"); } catch (error) { /* showLogin anyway */ }
    $("files").replaceChildren();
    showLogin("");
    notify("Logged out.");
  });

  // -- my files --------------------------------------------------------------------------

  async function refreshFiles() {
    let files;
    try {
      const answer = await api("GET", "/api/files");
      files = Array.isArray(answer) ? answer : answer.files;  // [...] or {files: [...]}
    } catch (error) {
      if (error.status !== 401) notify("Could not list your files: " + error.message, true);
      return;
    }
    const list = $("files");
    list.replaceChildren(...files.map(fileItem));
    $("files-empty").hidden = files.length > 0;
  }

  function fileItem(file) {
    const item = $("file-template").content.firstElementChild.cloneNode(true);
    item.dataset.id = file.id;
    item.dataset.name = file.name;
    const link = item.querySelector(".name");
    link.textContent = file.name;
    link.href = file.url;
    item.querySelector(".size").textContent = formatBytes(file.size);
    item.dataset.kind = file.kind;
    const expires = toDate(file.expires);
    const expiry = item.querySelector(".expiry");
    if (file.kind === "cloud") {
      expiry.textContent = "Kept in cloud drive";
    } else if (expires) {
      expiry.append("Expires ", timeElement(expires));
    } else {
      expiry.textContent = "Kept until deleted";
    }
    const share = item.querySelector(".share");
    const toggle = item.querySelector(".links-toggle");
    const move = item.querySelector(".move");
    const del = item.querySelector(".delete");
    share.setAttribute("aria-label", "Copy a share link for " + file.name);
    toggle.setAttribute("aria-label", "Links to " + file.name);
    const toCloud = file.kind !== "cloud";
    move.textContent = toCloud ? "Keep" : "Move to station";
    move.setAttribute("aria-label", toCloud ? "Keep " + file.name + " in the cloud drive"
                                            : "Move " + file.name + " to the station");
    del.setAttribute("aria-label", "Delete " + file.name);
    item.querySelector(".share-label").textContent = "Share link for " + file.name;
    setUpShareBox(file, item);
    share.addEventListener("click", () => shareFile(file, item, share));
    toggle.addEventListener("click", () => {
      if (item.querySelector(".share-box").hidden) openShareBox(file, item);
      else closeShareBox(item);
    });
    move.addEventListener("click", () => moveFile(file, item, move, toCloud ? "cloud" : "station"));
    del.addEventListener("click", () => deleteFile(file, item, del));
    return item;
  }

  // Station files expire; the cloud drive keeps them until deleted (within its capacity).
  async function moveFile(file, item, button, kind) {
    button.disabled = true;
    try {
      const moved = await api("PATCH", "/api/files/" + encodeURIComponent(file.id), { kind });
      const fresh = fileItem(moved);
      item.replaceWith(fresh);
      fresh.querySelector(".move").focus();  // where the pressed button was
      const until = toDate(moved.expires);
      const where = kind === "cloud" ? " is kept in the cloud drive"
        : " is back on the station" + (until ? " until " + formatDate(until) : "");
      notify(file.name + where + ".");
      refreshMe().catch(() => {});
    } catch (error) {
      button.disabled = false;
      const where = kind === "cloud" ? "the cloud drive" : "the station";
      notify("Could not move " + file.name + " to " + where + ": " + error.message, true);
    }
  }

  // -- share links -----------------------------------------------------------------------
  //
  // Each file has a share box (opened by "Links", or by making a link): the last link made
  // with its URL field, "Link options" (a <details> form for a link with a lifetime, a
  // password or a download limit) and the file's links, each active one with "Revoke".

  function sharesPath(file) {
    return "/api/files/" + encodeURIComponent(file.id) + "/shares";
  }

  // Names, ids and the options form of a new file item's share box.
  function setUpShareBox(file, item) {
    const box = item.querySelector(".share-box");
    box.id = "share-box-" + file.id;
    item.querySelector(".links-toggle").setAttribute("aria-controls", box.id);
    item.querySelector(".links").setAttribute("aria-label", "Existing links to " + file.name);
    const form = item.querySelector(".share-form");
    const fields = {
      days: form.querySelector(".share-days"),
      password: form.querySelector(".share-password"),
      limit: form.querySelector(".share-limit"),
    };
    const create = form.querySelector(".share-create");
    item.querySelector(".share-options summary")
      .setAttribute("aria-label", "Link options for " + file.name);
    fields.days.setAttribute("aria-label", "Link to " + file.name + " expires after (days)");
    fields.password.setAttribute("aria-label",
                                 "Password for the link to " + file.name + " (optional)");
    fields.limit.setAttribute("aria-label",
                              "Download limit for the link to " + file.name + " (optional)");
    create.setAttribute("aria-label", "Create link for " + file.name);
    resetLinkOptions(fields);
    // A link never outlives its file: the API shortens it to the file's expiry.
    const hint = form.querySelector(".share-hint");
    const until = toDate(file.expires);
    hint.id = "share-hint-" + file.id;
    hint.hidden = !until;
    if (until) {
      hint.append("A link stops working when the file expires, ", timeElement(until),
                  ", at the latest.");
      fields.days.setAttribute("aria-describedby", hint.id);
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const options = linkOptions(file, fields);
      if (options === null) return;
      const share = await shareFile(file, item, create, options);
      if (share) resetLinkOptions(fields);  // the password is not kept around
    });
  }

  // The options of a link made without any: the default lifetime (/api/me), no password and
  // no download limit.
  function resetLinkOptions(fields) {
    const days = me ? me.share_expires_days : null;
    fields.days.value = Number.isFinite(days) ? String(days) : "";
    fields.password.value = "";
    fields.limit.value = "";
  }

  // The options form as the API's body: empty optional fields are left out (an empty lifetime
  // is the default one).  The API checks the values and says what is wrong with them; a field
  // that holds no number at all is refused here (null, and the notice says why).
  function linkOptions(file, fields) {
    const options = {};
    const numbers = [[fields.days, "expires_days", "the number of days"],
                     [fields.limit, "max_downloads", "the download limit"]];
    for (const [field, key, what] of numbers) {
      if (field.validity.badInput) {
        notify("Could not make a link for " + file.name + ": " + what + " is not a number.",
               true);
        field.focus();
        return null;
      }
      if (field.value !== "") options[key] = field.valueAsNumber;
    }
    if (fields.password.value !== "") options.password = fields.password.value;
    return options;
  }

  function openShareBox(file, item) {
    item.querySelector(".share-box").hidden = false;
    item.querySelector(".links-toggle").setAttribute("aria-expanded", "true");
    return loadLinks(file, item);
  }

  function closeShareBox(item) {
    item.querySelector(".share-box").hidden = true;
    item.querySelector(".links-toggle").setAttribute("aria-expanded", "false");
  }

  // A new link: none of the options (the quick "Copy link": the API's defaults) or those of
  // the options form.  Shown in the share box and copied; the list of links is loaded again.
  // Fires with the link, or null when it was refused (the notice says why).
  async function shareFile(file, item, button, options = {}) {
    button.disabled = true;
    const result = item.querySelector(".share-result");
    const field = item.querySelector(".share-url");
    const status = item.querySelector(".share-status");
    try {
      const share = await api("POST", sharesPath(file), options);
      const url = new URL(share.url, location.href).href;
      field.value = url;
      result.dataset.token = share.token;
      result.hidden = false;
      openShareBox(file, item);
      const refusal = "Could not make a link for " + file.name + ":";
      if ($("notice").textContent.startsWith(refusal)) notify("");  // an earlier try's
      const until = toDate(share.expires);
      let about = until ? " It works until " + formatDate(until) + "." : "";
      if (share.password) about += " It asks for its password.";
      if (share.max_downloads) {
        about += " It allows " + share.max_downloads
          + (share.max_downloads === 1 ? " download." : " downloads.");
      }
      try {
        await navigator.clipboard.writeText(url);
        status.textContent = "Link copied." + about;
      } catch (error) {
        // No clipboard (plain http from afar, or refused): the field is there to copy from.
        field.focus();
        field.select();
        status.textContent = "Copy the link from the field." + about;
      }
      return share;
    } catch (error) {
      notify("Could not make a link for " + file.name + ": " + error.message, true);
      return null;
    } finally {
      button.disabled = false;
    }
  }

  const linkLoads = new WeakMap();  // file item → number of its latest request for links

  // The file's links (GET .../shares), newest first; true once they are shown (false when
  // the request failed, or a later one has taken over).
  async function loadLinks(file, item) {
    const request = (linkLoads.get(item) || 0) + 1;
    linkLoads.set(item, request);
    const list = item.querySelector(".links");
    const empty = item.querySelector(".links-empty");
    list.setAttribute("aria-busy", "true");
    let shares;
    try {
      const answer = await api("GET", sharesPath(file));
      shares = Array.isArray(answer) ? answer : answer.shares;  // [...] or {shares: [...]}
    } catch (error) {
      if (linkLoads.get(item) === request) {
        list.removeAttribute("aria-busy");
        empty.textContent = "Could not load the links.";
        empty.hidden = list.children.length > 0;
      }
      if (error.status !== 401) {
        notify("Could not list the links to " + file.name + ": " + error.message, true);
      }
      return false;
    }
    if (linkLoads.get(item) !== request) return false;
    list.replaceChildren(...shares.map((share, i) => linkItem(file, item, share, i + 1))
      .reverse());
    list.removeAttribute("aria-busy");
    empty.textContent = "No links yet.";
    empty.hidden = shares.length > 0;
    return true;
  }

  const STATES = { active: "Active", expired: "Expired", "used up": "Used up",
                   revoked: "Revoked" };

  // One link as the API gives it: {token, url, created, expires, downloads, max_downloads,
  // password, state}; links are numbered in the order they were made.
  function linkItem(file, item, share, number) {
    const row = $("link-template").content.firstElementChild.cloneNode(true);
    const label = "link " + number + " to " + file.name;
    row.dataset.token = share.token;
    row.dataset.state = share.state;
    const made = toDate(share.created);
    const name = row.querySelector(".link-name");
    name.append("Link " + number);
    if (made) name.append(" · made ", timeElement(made));
    row.querySelector(".link-state").textContent = STATES[share.state] || share.state;
    const parts = [];
    const expires = toDate(share.expires);
    if (expires) {
      parts.push([expires <= new Date() ? "Expired " : "Expires ", timeElement(expires)]);
    }
    const count = share.downloads || 0;
    parts.push([share.max_downloads === null || share.max_downloads === undefined
      ? count + (count === 1 ? " download" : " downloads") + ", no limit"
      : count + " of " + share.max_downloads + " downloads"]);
    parts.push([share.password ? "Password-protected" : "No password"]);
    row.querySelector(".link-detail")
      .append(...parts.flatMap((part, i) => (i === 0 ? part : [" · ", ...part])));
    const revoke = row.querySelector(".revoke");
    revoke.hidden = share.state !== "active";
    revoke.setAttribute("aria-label", "Revoke " + label);
    revoke.addEventListener("click", () => revokeLink(file, item, share, label, revoke));
    return row;
  }

  async function revokeLink(file, item, share, label, button) {
    button.disabled = true;
    const sentence = label[0].toUpperCase() + label.slice(1);
    try {
      await api("DELETE", "/api/shares/" + encodeURIComponent(share.token));
      notify(sentence + " revoked: it no longer works.");
    } catch (error) {
      notify("Could not revoke " + label + ": " + error.message, true);
      if (error.status !== 404) {  // 404: revoked already (elsewhere); show it as it is
        button.disabled = false;
        return;
      }
    }
    const result = item.querySelector(".share-result");
    if (result.dataset.token === share.token) {  // the link shown in the field is gone
      result.hidden = true;
      item.querySelector(".share-url").value = "";
      item.querySelector(".share-status").textContent = "";
      delete result.dataset.token;
    }
    await loadLinks(file, item);
    // The button is gone with its row: focus the row again, now showing "Revoked".
    const row = [...item.querySelectorAll(".links li")]
      .find((li) => li.dataset.token === share.token);
    (row || item.querySelector(".links-title")).focus();
  }

  async function deleteFile(file, item, button) {
    if (!window.confirm("Delete " + file.name + "? Its share links stop working.")) return;
    button.disabled = true;
    try {
      await api("DELETE", "/api/files/" + encodeURIComponent(file.id));
      item.remove();
      $("files-empty").hidden = $("files").children.length > 0;
      notify(file.name + " deleted.");
      refreshMe().catch(() => {});
    } catch (error) {
      button.disabled = false;
      notify("Could not delete " + file.name + ": " + error.message, true);
    }
  }

  // -- uploads ---------------------------------------------------------------------------

  // The key under which tus-js-client remembers an upload's URL (localStorage): per account,
  // so two people sharing a browser never resume each other's uploads.
  function fingerprint(file) {
    return Promise.resolve(["station", me.address, file.name, file.type, file.size,
                            file.lastModified, ENDPOINT].join("-"));
  }

  function storagePrefix() { return "tus::station-" + me.address + "-"; }

  class UploadEntry {
    constructor(file) {
      this.file = file;
      this.state = "starting";
      this.samples = [];
      this.item = $("upload-template").content.firstElementChild.cloneNode(true);
      this.item.dataset.name = file.name;
      this.item.querySelector(".name").textContent = file.name;
      this.item.querySelector(".size").textContent = formatBytes(file.size);
      this.bar = this.item.querySelector("progress");
      this.bar.setAttribute("aria-label", "Upload of " + file.name);
      this.status = this.item.querySelector(".status");
      this.pauseButton = this.item.querySelector(".pause");
      this.cancelButton = this.item.querySelector(".cancel");
      this.pauseButton.setAttribute("aria-label", "Pause " + file.name);
      this.cancelButton.setAttribute("aria-label", "Cancel " + file.name);
      this.pauseButton.addEventListener("click", () => {
        if (this.state === "uploading" || this.state === "starting") this.pause("paused");
        else this.resume();
      });
      this.cancelButton.addEventListener("click", () => this.cancel());
      $("uploads").prepend(this.item);
      active.add(this);
      this.upload = new tus.Upload(file, {
        endpoint: ENDPOINT,
        chunkSize: CHUNK,
        retryDelays: [0, 1000, 3000, 5000, 10000],
        headers: PROOF,
        metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
        fingerprint,
        removeFingerprintOnSuccess: true,
        onProgress: (sent, total) => this.progress(sent, total),
        onSuccess: () => this.done(),
        onError: (error) => this.failed(error),
      });
    }

    setState(state, text) {
      this.state = state;
      this.item.dataset.state = state;
      if (text !== undefined) this.status.textContent = text;
      const paused = state === "paused" || state === "error";
      this.pauseButton.textContent = state === "error" ? "Retry" : paused ? "Resume" : "Pause";
      this.pauseButton.setAttribute("aria-label", this.pauseButton.textContent + " "
                                    + this.file.name);
      this.pauseButton.hidden = state === "done";
      this.cancelButton.hidden = state === "done";
    }

    async begin() {
      this.setState("starting", "Starting…");
      const previous = await this.upload.findPreviousUploads();
      if (previous.length > 0) {
        previous.sort((a, b) => String(b.creationTime).localeCompare(String(a.creationTime)));
        this.upload.resumeFromPreviousUpload(previous[0]);
        this.item.dataset.resumed = "true";
        this.setState("starting", "Continuing an earlier upload…");
      }
      if (this.state === "starting") this.run();
    }

    run() {
      this.samples = [];
      this.setState("uploading");
      this.upload.start();
    }

    progress(sent, total) {
      this.item.dataset.offset = String(sent);
      this.bar.max = total;
      this.bar.value = sent;
      if (this.state !== "uploading") return;
      const now = performance.now();
      this.samples.push([now, sent]);
      while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW_MS) {
        this.samples.shift();
      }
      const [t0, b0] = this.samples[0];
      const percent = total ? Math.floor((sent / total) * 100) : 0;
      let text = percent + "% · " + formatBytes(sent) + " of " + formatBytes(total);
      if (now - t0 >= 500 && sent > b0) {
        const speed = ((sent - b0) / (now - t0)) * 1000;
        text += " · " + formatBytes(speed) + "/s · " + formatDuration((total - sent) / speed)
          + " left";
      }
      this.status.textContent = text;
    }

    pause(text) {
      if (this.state === "done" || this.state === "cancelled") return;
      this.upload.abort(false);
      const percent = this.bar.max ? Math.floor((this.bar.value / this.bar.max) * 100) : 0;
      this.setState("paused", text[0].toUpperCase() + text.slice(1) + " at " + percent + "%.");
      notify(this.file.name + " " + text + ".");
    }

    resume() {
      if (this.state !== "paused" && this.state !== "error") return;
      this.run();
      notify(this.file.name + " continues.");
    }

    async cancel() {
      const wasDone = this.state === "done";
      this.setState("cancelled", "Cancelled.");
      active.delete(this);
      this.item.remove();
      if (!wasDone) {
        // Stop, delete what the server holds (tus termination) and forget the URL.
        try { await this.upload.abort(true); } catch (error) { /* already gone */ }
        notify(this.file.name + " cancelled.");
      }
    }

    done() {
      this.bar.max = this.file.size || 1;
      this.bar.value = this.file.size || 1;
      this.setState("done", "Uploaded.");
      active.delete(this);
      notify(this.file.name + " uploaded.");
      refreshFiles();
      refreshMe().catch(() => {});
      refreshUnfinished();
    }

    failed(error) {
      const response = error.originalResponse;
      const status = response ? response.getStatus() : 0;
      if (status === 401) { sessionEnded(); return; }
      let reason = response ? (response.getBody() || "").trim() : "";
      if (status === 413) reason = "Too large: " + (reason || "over a limit");
      if (!reason) reason = navigator.onLine === false ? "You are offline." : error.message;
      this.setState("error", "Stopped: " + reason);
      notify(this.file.name + " stopped: " + reason, true);
    }
  }

  function addFiles(files) {
    if (!me) return;
    for (const file of files) new UploadEntry(file).begin().catch((error) => {
      notify("Could not start " + file.name + ": " + error.message, true);
    });
    $("file-input").value = "";
  }

  $("file-input").addEventListener("change", (event) => addFiles(event.target.files));

  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    drop.classList.add("is-over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("is-over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("is-over");
    addFiles(event.dataTransfer.files);
  });
  // A file dropped beside the zone must not replace the page (and stop the uploads).
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  window.addEventListener("beforeunload", (event) => {
    for (const entry of active) {
      if (entry.state === "uploading") { event.preventDefault(); event.returnValue = ""; return; }
    }
  });

  // -- uploads left unfinished by an earlier visit ---------------------------------------

  async function refreshUnfinished() {
    if (!me) return;
    const storage = tus.defaultOptions.urlStorage;
    let stored = [];
    try { stored = await storage.findAllUploads(); } catch (error) { /* no localStorage */ }
    const running = new Set([...active].map((entry) => entry.upload.url).filter(Boolean));
    const mine = stored.filter((u) => u.urlStorageKey.startsWith(storagePrefix())
                                      && !running.has(u.uploadUrl));
    const items = await Promise.all(mine.map((u) => unfinishedItem(u, storage)));
    const list = $("unfinished-list");
    list.replaceChildren(...items.filter(Boolean));
    $("unfinished").hidden = list.children.length === 0;
  }

  async function unfinishedItem(stored, storage) {
    const headers = { "Tus-Resumable": "1.0.0", ...PROOF };
    let offset = null;
    try {
      const response = await fetch(stored.uploadUrl, { method: "HEAD", headers });
      if (response.status === 404 || response.status === 410 || response.status === 403) {
        await storage.removeUpload(stored.urlStorageKey);  // expired or gone
        return null;
      }
      if (response.ok) offset = Number(response.headers.get("Upload-Offset"));
    } catch (error) { /* show it without the offset */ }
    const name = (stored.metadata && stored.metadata.filename) || "a file";
    const item = $("unfinished-template").content.firstElementChild.cloneNode(true);
    item.dataset.name = name;
    item.querySelector(".name").textContent = name;
    const size = stored.size;
    let detail = formatBytes(size);
    if (offset !== null && size) detail = Math.floor((offset / size) * 100) + "% of " + detail;
    const started = toDate(stored.creationTime);
    if (started) detail += " · started " + formatDate(started);
    item.querySelector(".detail").textContent = detail;
    const forget = item.querySelector(".forget");
    forget.setAttribute("aria-label", "Forget the unfinished upload of " + name);
    forget.addEventListener("click", async () => {
      await storage.removeUpload(stored.urlStorageKey);
      fetch(stored.uploadUrl, { method: "DELETE", headers }).catch(() => {});
      item.remove();
      $("unfinished").hidden = $("unfinished-list").children.length === 0;
    });
    return item;
  }

  start();
})();
