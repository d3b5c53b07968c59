#!/usr/bin/env python3
"""Finds import circles between the source files of each crate (CONTRIBUTING.md §1).

A file depends on another when it names something the other defines: through `use`, or a
path written in the code (`crate::a::b::Item`, `super::Item`, `child::Item`). A name reached
through a re-export (`pub use`) counts for the file that defines it, so a `mod.rs` that only
re-exports its children ties nothing; test modules (`#[cfg(test)]`) are left out. Every set
of files that reach each other is printed with the names that tie them, and the exit status
is 1 when there is one. Usage: scripts/import-cycles.py [CRATE_DIR ...] (default: every
member of the workspace and the fuzz targets).
"""

import re
import sys
from pathlib import Path

VISIBILITY = r"(?:pub(?:\([^)]*\))?\s+)?"
DEFINITION = re.compile(
    r"^\s*" + VISIBILITY + r"(?:async\s+|const\s+|unsafe\s+)*"
    r"(?:fn|struct|enum|trait|const|static|type|union|mod)\s+([A-Za-z_]\w*)",
    re.M,
)
MACRO = re.compile(r"macro_rules!\s*([A-Za-z_]\w*)")
MOD_DECL = re.compile(r"^\s*" + VISIBILITY + r"mod\s+(\w+)\s*;", re.M)
USE = re.compile(r"^\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M)
PATH = re.compile(r"(?<![\w:])((?:[A-Za-z_]\w*::)+[A-Za-z_]\w*)")


def clean(text):
    """The code without comments, string contents and `#[cfg(test)]` modules."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r'(?<!\w)b?r(#*)".*?"\1', '""', text, flags=re.S)
    text = re.sub(r'(?<!\w)b?"(?:\\.|[^"\\])*"', '""', text, flags=re.S)
    text = re.sub(r"b?'(?:\\.|[^'\\])'", "' '", text)
    text = re.sub(r"//[^\n]*", "", text)
    out, pos = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*" + VISIBILITY + r"mod\s+\w+\s*(;|\{)", text):
        if m.start() < pos:
            continue
        end = m.end()
        if m.group(1) == "{":
            depth = 1
            while end < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                end += 1
        out.append(text[pos : m.start()])
        pos = end
    out.append(text[pos:])
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d, e as f}}` -> [(['a','b'], 'b'), (['a','c','d'], 'd'), (['a','c','e'], 'f')]."""
    tree = " ".join(tree.split())
    brace = tree.find("{")
    if brace < 0:
        path, _, alias = tree.partition(" as ")
        segments = [s.strip() for s in path.split("::") if s.strip()]
        return [(segments, alias.strip() or (segments[-1] if segments else ""))]
    prefix = [s.strip() for s in tree[:brace].split("::") if s.strip()]
    inner = tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner + ","):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            if inner[start:i].strip():
                items.append(inner[start:i])
            start = i + 1
    return [(prefix + path, alias) for item in items for path, alias in expand_use_tree(item)]


class Module:
    def __init__(self, file, path, root):
        self.file, self.path, self.root = file, path, root
        self.text = clean(file.read_text())
        self.children = {}
        self.defined = set(DEFINITION.findall(self.text)) | set(MACRO.findall(self.text))
        self.uses = []  # (absolute path, alias, is_reexport)


def crate_roots(crate):
    src = crate / "src"
    roots = [src / "lib.rs", src / "main.rs"] + sorted((src / "bin").glob("*.rs"))
    roots += sorted((src / "bin").glob("*/main.rs")) + sorted((crate / "fuzz_targets").glob("*.rs"))
    return [r for r in roots if r.is_file()]


def load_tree(root_file):
    """Every module file of one crate root, by module path (a tuple of names)."""
    modules = {}

    def load(file, path):
        module = Module(file, path, root_file)
        modules[path] = module
        own_dir = file.parent if file.name in ("mod.rs", "lib.rs", "main.rs") or path == () else file.parent / file.stem
        for name in MOD_DECL.findall(module.text):
            for candidate in (own_dir / f"{name}.rs", own_dir / name / "mod.rs"):
                if candidate.is_file():
                    module.children[name] = path + (name,)
                    load(candidate, path + (name,))
                    break

    load(root_file, ())
    return modules


def absolute(module, segments):
    """A path as written in `module`, made absolute (None: another crate or the prelude)."""
    if not segments:
        return None
    head, rest = segments[0], segments[1:]
    if head == "crate":
        return list(rest)
    if head in ("self", "super"):
        base = list(module.path)
        while segments and segments[0] in ("self", "super"):
            if segments[0] == "super":
                base = base[:-1]
            segments = segments[1:]
        return base + list(segments)
    if head in module.children:
        return list(module.path) + list(segments)
    return None


def collect_uses(modules):
    for module in modules.values():
        aliases = {}
        for m in USE.finditer(module.text):
            for segments, alias in expand_use_tree(m.group(2)):
                target = absolute(module, segments)
                if target is None:
                    continue
                module.uses.append((target, alias, bool(m.group(1))))
                if alias not in ("*", "self"):
                    aliases[alias] = target
                elif alias == "self":
                    aliases[segments[-2] if len(segments) > 1 else ""] = target[:-1]
        code = USE.sub("", module.text)
        for m in PATH.finditer(code):
            segments = m.group(1).split("::")
            target = absolute(module, segments)
            if target is None and segments[0] in aliases:
                target = aliases[segments[0]] + segments[1:]
            if target is not None:
                module.uses.append((target, segments[-1], False))


def resolve(modules, target, depth=0):
    """The file that defines what `target` names, following re-exports."""
    path, i = (), 0
    while i < len(target) and path + (target[i],) in modules:
        path += (target[i],)
        i += 1
    if path not in modules:
        return None
    module = modules[path]
    if i == len(target) or target[i] in ("*", "self") or depth > 16:
        return module.file
    item = target[i]
    if item in module.defined:
        return module.file
    for reexported, alias, is_pub in module.uses:
        if is_pub and alias == item:
            return resolve(modules, reexported, depth + 1) or module.file
    for reexported, alias, is_pub in module.uses:
        if is_pub and alias == "*":
            inner = resolve(modules, reexported[:-1] + [item], depth + 1)
            if inner is not None and inner != modules.get(tuple(reexported[:-1]), module).file:
                return inner
    return module.file


def edges_of(modules):
    edges = {}
    for module in modules.values():
        for target, alias, is_pub in module.uses:
            if is_pub:
                continue  # a re-export ties nothing: its users depend on the definer
            file = resolve(modules, target)
            if file is not None and file != module.file:
                edges.setdefault(module.file, {}).setdefault(file, set()).add(target[-1] if target else "")
    return edges


def circles(edges):
    """Tarjan's strongly connected components with more than one file."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def workspace_crates(top):
    """The `members` of the workspace's Cargo.toml, and the fuzz targets."""
    manifest = (top / "Cargo.toml").read_text()
    members = re.search(r"^members\s*=\s*\[([^\]]*)\]", manifest, re.M)
    return re.findall(r'"([^"]+)"', members.group(1) if members else "") + ["fuzz"]


def main(args):
    sys.setrecursionlimit(10000)
    top = Path(__file__).resolve().parent.parent
    crates = [top / c for c in (args or workspace_crates(top))]
    total, files = 0, 0
    for crate in crates:
        for root in crate_roots(crate):
            modules = load_tree(root)
            files += len(modules)
            collect_uses(modules)
            edges = edges_of(modules)
            for component in circles(edges):
                total += 1
                print(f"import circle {total}: " + ", ".join(str(f.relative_to(top)) for f in component))
                for a in component:
                    for b, names in sorted(edges.get(a, {}).items()):
                        if b in component:
                            print(f"  {a.relative_to(top)} -> {b.relative_to(top)}: {', '.join(sorted(names))}")
    print(f"{total} import circles in {files} module files")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
