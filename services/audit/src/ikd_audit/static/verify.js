// Recomputes the entry's inclusion proof in the browser (RFC 9162 section 2.1.3.2, SHA-256
// via Web Crypto), so the verdict does not depend on the server's word.
"use strict";

function hexToBytes(hex) {
  if (!/^([0-9a-f]{2})*$/.test(hex)) throw new Error("not hex: " + hex);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

const leafHash = (data) => sha256(concat([new Uint8Array([0]), data]));
const nodeHash = (left, right) => sha256(concat([new Uint8Array([1]), left, right]));

async function verifyInclusion(leaf, index, size, path, root) {
  if (!(index >= 0 && index < size)) throw new Error("leaf index outside the tree");
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) throw new Error("audit path too long");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("audit path too short");
  if (bytesToHex(r) !== bytesToHex(root)) throw new Error("the path does not lead to the signed root");
}

function shown(name) {
  const cell = document.querySelector('[data-field="' + name + '"]');
  return cell ? cell.textContent : null;
}

async function main() {
  const verdict = document.getElementById("browser-verdict");
  const fail = (message) => {
    verdict.dataset.status = "failed";
    verdict.className = "error";
    verdict.textContent = "Browser check FAILED: " + message;
  };
  if (!window.crypto || !crypto.subtle) {
    verdict.dataset.status = "unavailable";
    verdict.textContent = "This browser cannot hash here (Web Crypto needs HTTPS or localhost).";
    return;
  }
  try {
    const proof = JSON.parse(document.getElementById("proof").dataset.proof);
    const leafData = Uint8Array.from(atob(proof.leaf_data), (c) => c.charCodeAt(0));
    const leaf = await leafHash(leafData);
    if (bytesToHex(leaf) !== proof.leaf_hash) return fail("the entry does not hash to its leaf");
    // What the page shows must be what was hashed.
    const doc = JSON.parse(new TextDecoder().decode(leafData));
    for (const [name, value] of Object.entries(doc)) {
      if (name === "v") continue;
      const expected = Array.isArray(value) ? value.join(", ") : (value === null ? "" : String(value));
      const cell = shown(name);
      if (cell !== null && cell !== expected) return fail("the page shows a different " + name);
    }
    const path = proof.audit_path.map(hexToBytes);
    await verifyInclusion(leaf, proof.leaf_index, proof.tree_size, path,
                          hexToBytes(proof.tree_head.root_hash));
    verdict.dataset.status = "verified";
    verdict.className = "ok";
    verdict.textContent = "Verified in your browser: leaf " + proof.leaf_index +
      " hashes up to the root of the signed tree of size " + proof.tree_size + ".";
  } catch (error) {
    fail(error.message);
  }
}

main();
