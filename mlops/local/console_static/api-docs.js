// A readable page of /openapi.json: every operation with its request, examples and answers.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function resolve(spec, schema) {
  if (schema && schema.$ref) return resolve(spec, schema.$ref.split("/").slice(1).reduce((o, k) => o[k], spec));
  return schema || {};
}

function schemaTable(spec, schema) {
  const s = resolve(spec, schema);
  if (s.oneOf) {
    // One of several bodies: each with its own fields, named after its schema.
    return el("div", {}, s.oneOf.map((alt) => el("div", {},
      el("h4", {}, `one of: ${alt.$ref ? alt.$ref.split("/").pop() : "body"}`), schemaTable(spec, alt))));
  }
  const props = s.properties || {};
  if (!Object.keys(props).length) return el("pre", {}, JSON.stringify(s, null, 2));
  return el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "meaning"))),
    el("tbody", {}, Object.entries(props).map(([name, p]) => {
      const r = resolve(spec, p);
      return el("tr", {}, el("td", {}, el("code", {}, name), (s.required || []).includes(name) ? " *" : ""),
        el("td", {}, r.type || (r.oneOf ? "one of" : "") || "-"), el("td", {}, r.description || ""));
    })));
}

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  document.title = spec.info.title;
  document.getElementById("api-version").textContent = `${spec.info.title} ${spec.info.version}`;
  const docs = document.getElementById("docs");
  const parts = [el("section", {}, el("p", {}, spec.info.description || ""),
    el("p", {}, "servers: ", spec.servers.map((s) => el("span", {}, el("code", {}, s.url), ` ${s.description || ""}; `))))];
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const content = (op.requestBody && op.requestBody.content && op.requestBody.content["application/json"]) || {};
      const examples = Object.entries(content.examples || {}).map(([name, ex]) =>
        el("div", {}, el("strong", {}, `example ${name}`), el("pre", {}, JSON.stringify(ex.value))));
      const answers = Object.entries(op.responses || {}).map(([code, r]) => {
        const body = r.content && r.content["application/json"];
        return el("div", {}, el("h4", {}, `${code} — ${r.description || ""}`), body ? schemaTable(spec, body.schema) : null);
      });
      parts.push(el("section", { class: "operation" },
        el("h2", {}, el("code", {}, `${method.toUpperCase()} ${path}`), " ", op.summary || ""),
        el("p", {}, (op.requestBody && op.requestBody.description) || ""),
        el("h3", {}, "request"), schemaTable(spec, content.schema), examples,
        el("h3", {}, "answers"), answers));
    }
  }
  docs.replaceChildren(...parts);
  document.body.dataset.loaded = "true";
}

main().catch((error) => { document.getElementById("docs").textContent = error.message; });
