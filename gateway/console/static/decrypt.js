// Decrypts a request's documents in the clerk's browser with the court's private key.
// The key file is read here and kept in this page's memory only: it is never sent anywhere.
// What a sender wrote (subject, text, file names) is shown with textContent, never as HTML.
import * as openpgp from "./vendor/openpgp.min.mjs";

const INLINE = new Set(["application/pdf", "image/png", "image/jpeg", "text/plain"]);
const EXTENSIONS = {
  "application/pdf": ".pdf", "image/png": ".png", "image/jpeg": ".jpg", "image/tiff": ".tif",
  "text/plain": ".txt", "application/vnd.oasis.opendocument.text": ".odt",
  "application/vnd.oasis.opendocument.spreadsheet": ".ods",
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
};
let keys = null;
const names = new Map();  // "<submission>-<index>" -> the file name the manifest gives
const urls = new Map();   // target id -> the Blob URL shown there

const $ = (selector, root = document) => root.querySelector(selector);
const keyStatus = $("#keystatus");

function say(element, text, kind) {
  element.textContent = text;
  element.className = kind || "";
}

async function fetchEncrypted(url) {
  const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  const type = answer.headers.get("content-type") || "";
  if (!answer.ok || !type.startsWith("application/octet-stream")) {
    throw new Error("fetch");
  }
  return new Uint8Array(await answer.arrayBuffer());
}

async function decrypt(bytes, format) {
  const message = await openpgp.readMessage({ binaryMessage: bytes });
  const { data } = await openpgp.decrypt({ message, decryptionKeys: keys, format });
  return data;
}

async function readKeys(file, passphrase) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(bytes);
  const found = text.includes("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    ? await openpgp.readPrivateKeys({ armoredKeys: text })
    : await openpgp.readPrivateKeys({ binaryKeys: bytes });
  const ready = [];
  for (const key of found) {
    ready.push(key.isDecrypted() ? key : await openpgp.decryptKey({ privateKey: key, passphrase }));
  }
  return ready;
}

async function loadKey() {
  const file = $("#keyfile").files[0];
  if (!file) {
    say(keyStatus, "Choisissez d'abord le fichier de la clé privée.", "bad");
    return;
  }
  say(keyStatus, "Lecture de la clé…");
  try {
    keys = await readKeys(file, $("#passphrase").value);
  } catch (error) {
    keys = null;
    const hint = /passphrase/i.test(String(error)) ? " (phrase de passe fausse ?)" : "";
    say(keyStatus, "Ce fichier n'est pas une clé privée OpenPGP utilisable" + hint + ".", "bad");
    return;
  }
  $("#passphrase").value = "";
  const first = keys[0];
  const who = first.getUserIDs()[0] || "";
  say(keyStatus, `Clé chargée : ${first.getFingerprint().toUpperCase()} ${who}. ` +
      "Elle reste dans cette page et disparaît quand vous la quittez.", "ok");
  document.querySelectorAll("button.decrypt").forEach((button) => { button.disabled = false; });
  document.querySelectorAll("[data-manifest-url]").forEach(showManifest);
}

async function showManifest(box) {
  const locked = $(".locked", box);
  try {
    const text = await decrypt(await fetchEncrypted(box.dataset.manifestUrl), "utf8");
    const manifest = JSON.parse(text);
    const facts = $("dl", box);
    $('[data-field="subject"]', box).textContent = manifest.message?.subject || "(sans objet)";
    const body = $('[data-field="body"]', box);
    body.textContent = manifest.body_text || "(message sans texte)";
    facts.hidden = false;
    body.hidden = false;
    locked.hidden = true;
    for (const doc of manifest.documents || []) {
      const key = `${box.dataset.submission}-${doc.index}`;
      names.set(key, doc.filename);
      const cell = document.querySelector(`[data-filename="${key}"]`);
      if (cell) cell.textContent = doc.filename;
    }
  } catch (error) {
    say(locked, "Le manifeste de cet envoi ne s'ouvre pas avec cette clé.", "bad");
  }
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

function show(viewer, blobUrl, type, data) {
  viewer.replaceChildren();
  if (type === "application/pdf") {
    const frame = document.createElement("iframe");
    frame.src = blobUrl;
    frame.title = "Document déchiffré";
    viewer.append(frame);
  } else if (type === "image/png" || type === "image/jpeg") {
    const image = document.createElement("img");
    image.src = blobUrl;
    image.alt = "Document déchiffré (image)";
    viewer.append(image);
  } else if (type === "text/plain") {
    const pre = document.createElement("pre");
    pre.textContent = new TextDecoder().decode(data);
    viewer.append(pre);
  }
}

async function openDocument(button) {
  const row = document.getElementById(button.dataset.target);
  const result = $(".result", row);
  row.hidden = false;
  say(result, "Déchiffrement…");
  button.disabled = true;
  try {
    const data = await decrypt(await fetchEncrypted(button.dataset.url), "binary");
    const computed = hex(await crypto.subtle.digest("SHA-256", data));
    const expected = button.dataset.sha256;
    const type = INLINE.has(button.dataset.type) ? button.dataset.type : "application/octet-stream";
    if (urls.has(row.id)) URL.revokeObjectURL(urls.get(row.id));
    const blobUrl = URL.createObjectURL(new Blob([data], { type }));
    urls.set(row.id, blobUrl);
    const same = computed === expected;
    result.replaceChildren();
    const verdict = document.createElement("span");
    verdict.className = same ? "ok" : "bad";
    verdict.textContent = same ? "SHA-256 conforme au manifeste" : "SHA-256 DIFFÉRENT du manifeste";
    const digest = document.createElement("code");
    digest.className = "hash computed-sha256";
    digest.textContent = computed;
    const link = document.createElement("a");
    link.href = blobUrl;
    link.download = names.get(button.dataset.key) ||
      button.dataset.name + (EXTENSIONS[button.dataset.type] || "");
    link.className = "save";
    link.textContent = "Enregistrer le document";
    result.append(verdict, " — calculé dans cette page : ", digest, " ", link);
    result.dataset.computed = computed;
    show($(".viewer", row), blobUrl, type, data);
  } catch (error) {
    const text = String(error).includes("fetch")
      ? "Le document n'a pu être chargé : la session a peut-être expiré ; rechargez la page."
      : "Cette clé n'ouvre pas ce document (est-ce bien la clé du tribunal ?).";
    say(result, text, "bad");
  } finally {
    button.disabled = false;
  }
}

$("#loadkey")?.addEventListener("click", loadKey);
document.querySelectorAll("button.decrypt").forEach((button) => {
  button.addEventListener("click", () => openDocument(button));
});
