#!/usr/bin/env python3
"""Generates crates/api/src/proto/table.txt: the protobuf field table r8s uses
to decode `application/vnd.kubernetes.protobuf` request bodies into upstream's
JSON shape (see crates/api/src/proto/mod.rs).

Facts and where they come from (nothing is typed in by hand):
  * field numbers, wire kinds, repeated/map, message types
        the k8s-pb crate (prost-generated from upstream's generated.proto)
  * JSON field names
        the k8s-openapi crate's generated Deserialize impls
        ("volumeID" => Field::Key_volume_id), for the v1_33 module
  * Go-side JSON behaviour: `json:",inline"` embedding, and whether a zero
    scalar is still written (pointer fields, fields without omitempty)
        the Go struct tags of k8s.io/api and k8s.io/apimachinery at the
        matching release (optional; without them zero scalars are dropped
        and inline fields are not flattened)
  * apiVersion/kind -> message
        the k8s-openapi crate's `impl Resource` blocks

Usage:
  python3 tools/gen_proto_table.py [--go-api DIR] [--go-apimachinery DIR] [-o OUT]

Get the Go sources with e.g.
  git clone -b v0.33.13 --depth 1 https://github.com/kubernetes/api /tmp/goapi
  git clone -b v0.33.13 --depth 1 https://github.com/kubernetes/apimachinery /tmp/goapimachinery
The crates are looked up in ~/.cargo/registry/src/*/ (run `cargo fetch` in a
scratch crate depending on k8s-pb 0.9 if k8s-pb is missing).
"""
import argparse
import glob
import os
import re
import sys

OPENAPI_VERSION = "v1_33"


def find_crate(pattern):
    hits = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/" + pattern)))
    if not hits:
        sys.exit(f"crate {pattern} not found in ~/.cargo/registry/src; run `cargo fetch` first")
    return hits[-1]


def proto_package(modpath):
    """k8s-pb module path (api/core/v1) -> proto package (k8s.io.api.core.v1)."""
    parts = [p.replace("_", "-") if p in ("apiextensions_apiserver", "kube_aggregator") else p for p in modpath]
    return "k8s.io." + ".".join(parts)


def norm(name):
    """Rust field name (either crate's spelling) -> comparison key."""
    return re.sub(r"[^a-z0-9]", "", name.replace("r#", "").lower())


def camel(snake):
    head, *rest = snake.replace("r#", "").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


# ---------------------------------------------------------------- k8s-openapi


def read_openapi(root):
    """Returns ({full proto name: {norm rust field: json}}, [(apiVersion, kind, full)])."""
    fields, kinds = {}, []
    for path in glob.glob(os.path.join(root, "**", "*.rs"), recursive=True):
        text = open(path, encoding="utf-8").read()
        m = re.search(r'"io\.k8s\.([A-Za-z0-9_.-]+)"\.into\(\)', text)
        if not m:
            continue
        full = "k8s.io." + m.group(1)
        fields[full] = {
            norm(rust): js for js, rust in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text)
        }
        av = re.search(r'const API_VERSION: &\'static str = "([^"]+)";', text)
        kd = re.search(r'const KIND: &\'static str = "([^"]+)";', text)
        if av and kd:
            kinds.append((av.group(1), kd.group(1), full))
    return fields, kinds


# ---------------------------------------------------------------------- Go


def read_go(root, prefix):
    """Returns ({(package, GoType): {tag: info}}, {(package, GoType) of slice types}).

    package is the proto package (prefix + dir with dots)."""
    structs, slices = {}, set()
    if not root:
        return structs, slices
    for path in glob.glob(os.path.join(root, "**", "*.go"), recursive=True):
        if path.endswith("_test.go") or "generated" in os.path.basename(path):
            continue
        pkg = prefix + "." + os.path.relpath(os.path.dirname(path), root).replace(os.sep, ".")
        text = open(path, encoding="utf-8").read()
        for name in re.findall(r"^type (\w+) \[\]\w+", text, re.M):
            slices.add((pkg, name))
        for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", text, re.M | re.S):
            info = {}
            for line in m.group(2).splitlines():
                pm = re.search(r'protobuf:"[a-z0-9]+,(\d+),(?:[^"]*name=(\w+))?', line)
                jm = re.search(r'json:"([^"]*)"', line)
                if not pm or not jm:
                    continue
                decl = line.split("`")[0].split()
                gotype = decl[1] if len(decl) > 1 else decl[0]
                jparts = jm.group(1).split(",")
                info[int(pm.group(1))] = {
                    # `json:"-"` fields (RawExtension.Raw) and inlined ones keep the proto name.
                    "json": (pm.group(2) or decl[0][:1].lower() + decl[0][1:]) if jparts[0] in ("", "-") else jparts[0],
                    "omitempty": "omitempty" in jparts[1:],
                    "inline": "inline" in jparts[1:],
                    "pointer": gotype.startswith("*"),
                }
            structs[(pkg, m.group(1))] = info
    return structs, slices


# -------------------------------------------------------------------- k8s-pb


ATTR = re.compile(r"#\[prost\(([^\]]*)\)\]")


def target_path(rtype):
    """The message path inside a prost field type (Option<..>, Vec<..>, BTreeMap<String, ..>)."""
    t = re.sub(r"\s+", "", rtype)
    if "BTreeMap<" in t:
        t = t[t.index(",") + 1 :]
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        t = t.replace(wrapper, "")
    return t.rstrip(">,")


def read_pb(root):
    """Returns {(modpath tuple, prost name): [field dict]}."""
    messages = {}
    for path in glob.glob(os.path.join(root, "**", "mod.rs"), recursive=True):
        modpath = tuple(os.path.relpath(os.path.dirname(path), root).split(os.sep))
        if "testapigroup" in modpath:
            continue
        text = open(path, encoding="utf-8").read()
        text = re.sub(r"^\s*///.*\n", "", text, flags=re.M)
        for m in re.finditer(r"^pub struct (\w+) \{(?:\}|\n(.*?)^\})", text, re.M | re.S):
            fields = []
            for chunk in (m.group(2) or "").split("#[prost(")[1:]:
                attr, rest = chunk.split(")]", 1)
                fm = re.match(r"\s*pub (r#)?(\w+):\s*(.*),\s*$", rest, re.S)
                if not fm:
                    sys.exit(f"cannot parse field in {modpath} {m.group(1)}: {rest!r}")
                parts = [p.strip() for p in attr.split(",")]
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                f = {"tag": tag, "rust": fm.group(2), "repeated": "repeated" in parts, "map": False}
                mm = re.match(r'btree_map = "string, (\w+)"', attr)
                if mm:
                    f["map"], f["kind"] = True, mm.group(1)
                else:
                    f["kind"] = parts[0].split(" ")[0]
                if f["kind"] == "message":
                    f["target"] = resolve(modpath, target_path(fm.group(3)))
                fields.append(f)
            messages[(modpath, m.group(1))] = fields
    return messages


def resolve(modpath, path):
    segs = path.split("::")
    base = list(modpath)
    while segs and segs[0] == "super":
        base.pop()
        segs.pop(0)
    return tuple(base + segs[:-1]), segs[-1]


# --------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--go-api")
    ap.add_argument("--go-apimachinery")
    ap.add_argument("--list-guessed", action="store_true", help="print fields whose JSON name is camel-cased from the Rust name")
    ap.add_argument("-o", "--out", default=os.path.join(os.path.dirname(__file__), "..", "crates/api/src/proto/table.txt"))
    args = ap.parse_args()

    pb_root = os.path.join(find_crate("k8s-pb-0.9.*"), "src")
    oa_root = os.path.join(find_crate("k8s-openapi-0.29.*"), "src", OPENAPI_VERSION)
    messages = read_pb(pb_root)
    oa_fields, kinds = read_openapi(oa_root)
    go, slices = read_go(args.go_api, "k8s.io.api")
    go2, slices2 = read_go(args.go_apimachinery, "k8s.io.apimachinery")
    go.update(go2)
    slices |= slices2

    # Canonical (Go/proto) message names: prost re-cases some (AWS -> Aws).
    known = {}
    for full in oa_fields:
        pkg, name = full.rsplit(".", 1)
        known.setdefault(pkg, {})[name.lower()] = name
    for pkg, name in list(go) + list(slices):
        known.setdefault(pkg, {})[name.lower()] = name

    def full_name(modpath, prost_name):
        pkg = proto_package(modpath)
        return pkg + "." + known.get(pkg, {}).get(prost_name.lower(), prost_name)

    stats = {"fields": 0, "json_from_go": 0, "json_from_openapi": 0, "json_guessed": 0, "mismatch": 0}
    out_msgs = {}
    for (modpath, pname), fields in messages.items():
        full = full_name(modpath, pname)
        pkg, name = full.rsplit(".", 1)
        oa = oa_fields.get(full, {})
        gof = go.get((pkg, name), {})
        rows = []
        for f in sorted(fields, key=lambda f: f["tag"]):
            stats["fields"] += 1
            g = gof.get(f["tag"])
            oa_name = oa.get(norm(f["rust"]))
            if g:
                json_name = g["json"]
                stats["json_from_go"] += 1
                if oa_name and not g["inline"] and oa_name != json_name:
                    stats["mismatch"] += 1
                    print(f"warning: {full}.{f['rust']}: go {json_name!r} vs openapi {oa_name!r}", file=sys.stderr)
            elif oa_name:
                json_name = oa_name
                stats["json_from_openapi"] += 1
            else:
                json_name = camel(f["rust"])
                if args.list_guessed:
                    print(f"guess: {full}.{json_name}", file=sys.stderr)
                stats["json_guessed"] += 1
            kind = f["kind"]
            if kind == "message":
                tpkg, tname = full_name(*f["target"]).rsplit(".", 1)
                kind = "msg=" + (tname if tpkg == pkg else tpkg + "." + tname)
            flags = []
            if f["repeated"]:
                flags.append("r")
            if f["map"]:
                flags.append("map")
            if g and (g["pointer"] or not g["omitempty"]):
                flags.append("z")
            if g and g["inline"]:
                flags.append("i")
            rows.append(" ".join([str(f["tag"]), json_name, kind] + flags))
        out_msgs[full] = ("A" if (pkg, name) in slices else "", rows)

    lines = [
        "# GENERATED by tools/gen_proto_table.py from the k8s-pb 0.9 and k8s-openapi 0.29 (v1_33) crates",
        "# and the Go struct tags of k8s.io/api + k8s.io/apimachinery; do not edit. Regenerate:",
        "#   python3 tools/gen_proto_table.py --go-api /tmp/goapi --go-apimachinery /tmp/goapimachinery",
        "# P <proto package>  M <message> [A = JSON is the array in field 1]",
        "# <tag> <json name> <string|bytes|int32|int64|bool|double|msg=<type>> [r repeated] [map]",
        "#   [z zero value is still written] [i JSON-inlined into the parent]",
        "# K <apiVersion> <kind> <message>",
    ]
    last_pkg = None
    for full in sorted(out_msgs):
        pkg, name = full.rsplit(".", 1)
        if pkg != last_pkg:
            lines.append("P " + pkg)
            last_pkg = pkg
        flag, rows = out_msgs[full]
        lines.append(("M " + name + (" " + flag if flag else "")).rstrip())
        lines.extend(rows)
    for av, kind, full in sorted(set(kinds)):
        if full in out_msgs:
            lines.append(f"K {av} {kind} {full}")
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"{len(out_msgs)} messages, {stats}, {len(kinds)} kinds -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
