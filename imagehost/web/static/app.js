// imagehost pages: optional enhancements. Every flow works without this script.
"use strict";
(function () {
  const $ = (selector, root) => (root || document).querySelector(selector);
  const csrf = () => { const f = $("input[name=csrf]"); return f ? f.value : ""; };

  function text(tag, content, className) {
    const node = document.createElement(tag);
    node.textContent = content;
    if (className) node.className = className;
    return node;
  }

  // -- uploads: several files, drag and drop, paste, per-file progress ----------------
  function uploadFile(form, file, list) {
    const item = document.createElement("li");
    const progress = document.createElement("progress");
    progress.max = 100; progress.value = 0;
    progress.setAttribute("aria-label", "Uploading " + file.name);
    item.append(text("strong", file.name), progress);
    list.prepend(item);
    const data = new FormData();
    data.append("image", file, file.name || "pasted.png");
    for (const name of ["description", "isPublic", "albumId", "expiresIn"]) {
      const field = form.elements[name];
      if (field && (field.type !== "checkbox" || field.checked)) data.append(name, field.value);
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = 100 * e.loaded / e.total; };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      progress.remove();
      if (xhr.status === 201 && body) {
        const link = text("a", "Open the image page", "");
        link.href = body.page;
        item.append(" ", link);
        for (const [key, label] of [["direct", "Direct link"], ["markdown", "Markdown"]]) {
          const row = text("p", label + ": ", "hint");
          row.append(text("code", body[key]));
          item.append(row);
        }
        item.classList.add("done");
      } else {
        const error = body && body.error;
        const messages = error && error.violations ? error.violations.map((v) => v.message) : [];
        item.append(text("p", messages.join(" ") || (error && error.message) || "The upload failed.", "error"));
        item.classList.add("failed");
      }
    };
    xhr.onerror = () => { progress.remove(); item.append(text("p", "The upload failed: no answer from the server.", "error")); };
    xhr.send(data);
  }

  function enhanceUpload(form) {
    const input = form.elements.image, list = $("#uploads"), zone = $("#drop-zone");
    input.multiple = true;
    $("#drop-hint").append(" Drop files here or paste from the clipboard.");
    const send = (files) => { for (const file of files) uploadFile(form, file, list); };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (input.files.length) { send(input.files); form.reset(); }
    });
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); send(e.dataTransfer.files); });
    document.addEventListener("paste", (e) => {
      const files = [...(e.clipboardData ? e.clipboardData.files : [])];
      if (files.length) { e.preventDefault(); send(files); }
    });
  }

  // -- copy fields of the image page -------------------------------------------------
  function enhanceShare(form) {
    const snippets = JSON.parse(form.dataset.snippets);
    const update = () => {
      const chosen = snippets[form.elements.size.value + "/" + form.elements.format.value];
      for (const input of document.querySelectorAll("[data-snippet]")) input.value = chosen[input.dataset.snippet];
    };
    form.addEventListener("change", update);
    form.addEventListener("submit", (e) => { e.preventDefault(); update(); });
    for (const button of document.querySelectorAll(".nojs")) button.hidden = true;
    for (const button of document.querySelectorAll("[data-copy]")) {
      button.hidden = false;
      button.addEventListener("click", async () => {
        const field = document.getElementById(button.dataset.copy);
        try { await navigator.clipboard.writeText(field.value); } catch (err) { field.select(); document.execCommand("copy"); }
        button.textContent = "Copied";
        setTimeout(() => { button.textContent = "Copy"; }, 1500);
      });
    }
  }

  // -- "load more" on the grids ---------------------------------------------------------
  function enhanceLoadMore(link) {
    link.addEventListener("click", async (e) => {
      e.preventDefault();
      const url = new URL(link.href);
      url.searchParams.set("partial", "1");
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) { window.location = link.href; return; }
      document.getElementById(link.dataset.loadMore).insertAdjacentHTML("beforeend", await response.text());
      const next = response.headers.get("X-Next-Page");
      if (next) link.href = next; else link.remove();
    });
  }

  // -- drag to reorder an album (the arrow buttons do the same without script) ----------
  function enhanceAlbumOrder(grid) {
    let dragged = null;
    grid.addEventListener("dragstart", (e) => {
      dragged = e.target.closest(".tile");
      if (!dragged) return;
      dragged.classList.add("dragging");
      e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData("text/plain", dragged.dataset.id);
    });
    grid.addEventListener("dragover", (e) => {
      const over = e.target.closest(".tile");
      if (!dragged || !over || over === dragged) return;
      e.preventDefault();
      const after = [...grid.children].indexOf(over) > [...grid.children].indexOf(dragged);
      over.insertAdjacentElement(after ? "afterend" : "beforebegin", dragged);
    });
    grid.addEventListener("drop", (e) => e.preventDefault());
    grid.addEventListener("dragend", async () => {
      if (!dragged) return;
      dragged.classList.remove("dragging");
      dragged = null;
      const body = new URLSearchParams();
      for (const tile of grid.children) body.append("id", tile.dataset.id);
      const response = await fetch(grid.dataset.order, {
        method: "POST", credentials: "same-origin", body,
        headers: { "X-CSRF-Token": csrf(), "Accept": "application/json" } });
      grid.dataset.saved = response.ok ? "yes" : "no";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const upload = $("#upload-form");
    if (upload) enhanceUpload(upload);
    const share = $("#share-options");
    if (share) enhanceShare(share);
    for (const link of document.querySelectorAll("[data-load-more]")) enhanceLoadMore(link);
    const album = $("#album-grid[data-order]");
    if (album) enhanceAlbumOrder(album);
  });
})();
