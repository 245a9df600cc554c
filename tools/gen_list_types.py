#!/usr/bin/env python3
"""Generates crates/api/src/list_types.json: how each list and map field of
every Kubernetes type merges (x-kubernetes-list-type / list-map-keys /
map-type), read from the k8s-openapi crate's generated DeepMerge impls (the
crate carries these facts from upstream's OpenAPI spec; r8s needs them for
strategic merge patch, server-side apply and its own OpenAPI documents).

Usage: python3 tools/gen_list_types.py [path/to/k8s-openapi-X/src/v1_33]
Without an argument it looks in ~/.cargo/registry/src/*/k8s-openapi-0.29.0.
"""
import glob
import json
import os
import re
import sys


def find_src():
    if len(sys.argv) > 1:
        return sys.argv[1]
    hits = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_33"))
    if not hits:
        sys.exit("k8s-openapi 0.29.0 source not found; run `cargo fetch` first")
    return hits[0]


def main():
    src = find_src()
    rust_to_json = {}
    per_file = []
    for path in sorted(glob.glob(os.path.join(src, "**", "*.rs"), recursive=True)):
        text = open(path, encoding="utf-8").read()
        for js, rs in re.findall(r'"([A-Za-z0-9_$-]+)" => Field::Key_([a-z0-9_]+),', text):
            rust_to_json.setdefault(rs, js)
        per_file.append(text)
    out = {}
    for text in per_file:
        names = re.findall(r'fn schema_name\(\) -> std::borrow::Cow<\'static, str> \{\s*"([^"]+)"\.into\(\)', text)
        m = re.search(r"impl crate::DeepMerge for (\w+) \{(.*?)\n\}\n", text, re.S)
        if not names or not m:
            continue
        local = dict((rs, js) for js, rs in re.findall(r'"([A-Za-z0-9_$-]+)" => Field::Key_([a-z0-9_]+),', text))
        body = m.group(2)
        fields = {}
        for kind, field in re.findall(r"merge_strategies::(list::atomic|list::set|map::atomic|map::granular)\(\s*&mut self\.([a-z0-9_]+)", body):
            js = local.get(field, rust_to_json.get(field, field))
            fields[js] = {
                "list::atomic": {"list": "atomic"},
                "list::set": {"list": "set"},
                "map::atomic": {"map": "atomic"},
                "map::granular": {"map": "granular"},
            }[kind]
        for field, keys in re.findall(r"merge_strategies::list::map\(\s*&mut self\.([a-z0-9_]+),\s*other\.[a-z0-9_]+,\s*&\[(.*?)\],", body, re.S):
            js = local.get(field, rust_to_json.get(field, field))
            ks = re.findall(r"lhs\.([a-z0-9_]+) ==", keys)
            fields[js] = {"list": "map", "keys": [rust_to_json.get(k, k) for k in ks]}
        if fields:
            out[names[0]] = dict(sorted(fields.items()))
    dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "api", "src", "list_types.json")
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(dict(sorted(out.items())), f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(out)} types to {os.path.normpath(dest)}")


if __name__ == "__main__":
    main()
