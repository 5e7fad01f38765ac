#!/usr/bin/env python3
"""Checks the include graph of src/: no cycles between modules, no upward
includes between layers.

A module is a .c file and its .h (src/jobs/job.c and src/jobs/job.h are
module "job"); module A uses module B when a file of A includes B's header.
A cycle is a set of modules that use each other, directly or through
others (Tarjan's strongly connected components).  The layers are src/'s
folders, lowest first, as LAYERS lists them; a module may use modules of
its own layer and of the layers below, never above.  CMake enforces the
layers at build time too (each folder is a library that links downward);
this script also names the cycles inside one folder, which the build
cannot see.

Prints the counts and every offence; exits 1 when there is any.
Usage: scripts/check-includes.py [SRC_DIR]
"""
import os
import re
import sys

# Lowest first.  The top (src/ itself) holds main.c only.
LAYERS = ["common", "http", "access", "storage", "state", "hooks", "proc", "jobs", "app", "api", "server", "."]

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def modules(src):
    """{module: (layer, [files])} for every .c/.h under src."""
    out = {}
    for root, _dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        layer = rel.split(os.sep)[0] if rel != "." else "."
        for f in files:
            if not f.endswith((".c", ".h")) or f.endswith(".c.in"):
                continue
            mod = os.path.splitext(f)[0]
            entry = out.setdefault(mod, [layer, []])
            entry[1].append(os.path.join(root, f))
            if entry[0] != layer:
                raise SystemExit("check-includes: %s has files in two folders: %s" %
                                 (mod, entry[1]))
    return out


def graph(mods):
    edges = {m: set() for m in mods}
    for m, (_layer, files) in mods.items():
        for path in files:
            with open(path, encoding="utf-8") as fh:
                for inc in INCLUDE.findall(fh.read()):
                    dep = os.path.splitext(os.path.basename(inc))[0]
                    if dep in mods and dep != m:
                        edges[m].add(dep)
    return edges


def cycles(edges):
    """Strongly connected components of more than one module."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def rank(layer):
    return LAYERS.index(layer) if layer in LAYERS else -1


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "src")
    mods = modules(src)
    edges = graph(mods)
    problems = []
    unknown = sorted({layer for layer, _ in mods.values() if layer not in LAYERS})
    for layer in unknown:
        problems.append("folder src/%s is not in LAYERS" % layer)
    upward = []
    for m in sorted(edges):
        for d in sorted(edges[m]):
            if rank(mods[d][0]) > rank(mods[m][0]):
                upward.append("%s/%s -> %s/%s" % (mods[m][0], m, mods[d][0], d))
    circles = cycles(edges)
    nedges = sum(len(v) for v in edges.values())
    print("modules %d, module dependencies %d, cycles %d, upward includes %d" %
          (len(mods), nedges, len(circles), len(upward)))
    for c in circles:
        problems.append("cycle: " + " <-> ".join(c))
    for u in upward:
        problems.append("upward include: " + u)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
