#!/usr/bin/env python3
"""Checks the layering of topfetch's product folders.

Each product folder's README.md has one line

    Layer: contract `events/events.h`; may include core, proto.

naming the folder's one header (its contract for the rest of the code) and
the folders it may include. This script reads every .c and .h file of those
folders and fails, naming file and line, when an #include "..." names
  - a folder that is not on the including folder's list, or
  - a header of another folder that is not that folder's contract (a private
    header such as events/events_int.h).
`topfetch.h` belongs to the folder `include`; generated `NAME.pb-c.h`
headers belong to `proto`. Usage: check-layers.py [SOURCE_ROOT]
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
LAYER = re.compile(r"^Layer: contract ((?:`[^`]+`(?:, )?)+|none); may include ([a-z, ]+|nothing)\.\s*$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')

layers = {}
problems = []
for name in sorted(os.listdir(root)):
    readme = os.path.join(root, name, "README.md")
    if name.startswith(".") or name in ("tests", "bench", "fuzz", "examples") or not os.path.isfile(readme):
        continue
    lines = [l for l in open(readme, encoding="utf-8") if l.startswith("Layer:")]
    if len(lines) != 1 or not LAYER.match(lines[0]):
        problems.append(f"{name}/README.md: needs exactly one line 'Layer: contract `{name}/x.h`; may include a, b.'")
        continue
    m = LAYER.match(lines[0])
    contracts = set(re.findall(r"`([^`]+)`", m.group(1)))
    allowed = set() if m.group(2) == "nothing" else {x.strip() for x in m.group(2).split(",") if x.strip()}
    layers[name] = (contracts, allowed)

def owner(header):
    if "/" in header:
        return header.split("/", 1)[0]
    if header == "topfetch.h":
        return "include"
    if header.endswith(".pb-c.h"):
        return "proto"
    return None

for name, (contracts, allowed) in sorted(layers.items()):
    for dirpath, _, files in os.walk(os.path.join(root, name)):
        for f in sorted(files):
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            for no, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                header = m.group(1)
                o = owner(header)
                if o is None:
                    problems.append(f"{rel}:{no}: #include \"{header}\" names no folder (write \"folder/{header}\")")
                elif o == name:
                    continue
                elif o not in layers:
                    problems.append(f"{rel}:{no}: #include \"{header}\": '{o}' is not a product folder with a Layer line")
                elif o not in allowed:
                    problems.append(f"{rel}:{no}: {name}/ may not include {o}/ (\"{header}\"); it may include: "
                                    f"{', '.join(sorted(allowed)) or 'nothing'}")
                elif "/" in header and header not in layers[o][0]:
                    problems.append(f"{rel}:{no}: \"{header}\" is private to {o}/; use its contract "
                                    f"{', '.join(sorted(layers[o][0]))}")

for p in problems:
    print(p)
print(f"layers: {len(layers)} folders checked, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
