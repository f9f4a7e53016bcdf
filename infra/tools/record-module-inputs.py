#!/usr/bin/env python3
"""Records the inputs of a Terraform registry module release, for the offline contract test
(tests/infra/test_module_contracts.py): every argument a `module` call passes must be an input of
the exact version it pins. Terraform and the registry are not reachable where the tests run, so
the lists are recorded from the module's sources and committed.

Usage:
  record-module-inputs.py SOURCE VERSION [GIT_DIR]
    SOURCE   registry address, e.g. terraform-aws-modules/eks/aws
    VERSION  release, e.g. 21.19.0 (the repository tag v21.19.0)
    GIT_DIR  a clone of the module's repository with its tags; default: clone
             https://github.com/<namespace>/terraform-<provider>-<name> into a temp dir.
  record-module-inputs.py --all [MIRROR_DIR]
    re-record every module version pinned under infra/ (MIRROR_DIR/<namespace>+terraform-<provider>-<name>/repo
    when given, else fresh clones).

Writes infra/module-inputs/<namespace>_<name>_<provider>@<version>.json:
  {"source", "version", "inputs": {name: {"required": bool, "attributes": [...]}},
   "providers": {name: version constraint of the release's versions.tf}}
where "attributes" lists the top-level attributes of an object / map(object) input type (so
node-group and add-on keys are checked too).
"""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "infra" / "module-inputs"


def repo_url(source):
    namespace, name, provider = source.split("/")
    return f"https://github.com/{namespace}/terraform-{provider}-{name}"


def out_path(source, version):
    return OUT / f"{source.replace('/', '_')}@{version}.json"


def blocks_of(text, keyword):
    """(label, body) of each top-level `keyword "label" { ... }` block, by brace matching."""
    for m in re.finditer(rf'^{keyword}\s+"([^"]+)"\s*\{{', text, re.M):
        depth, i = 1, m.end()
        while depth:
            ch = text[i]
            if ch == '"':  # skip strings, which may hold braces
                i += 1
                while text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
            elif ch == "#" or text.startswith("//", i):
                i = text.index("\n", i)
                continue
            elif text.startswith("<<", i):  # heredoc
                tag = re.match(r"<<-?(\w+)", text[i:]).group(1)
                i = re.compile(rf"^\s*{tag}\s*$", re.M).search(text, i).end()
                continue
            depth += {"{": 1, "}": -1}.get(ch, 0)
            i += 1
        yield m.group(1), text[m.end():i - 1]


def type_attributes(body):
    """Top-level attribute names of an `object({...})` (possibly inside map()/list()) type."""
    m = re.search(r"^\s*type\s*=\s*(?:(?:map|list|set)\()?object\(\{", body, re.M)
    if not m:
        return []
    attrs, depth, i = [], 1, m.end()
    line_start = True
    while depth and i < len(body):
        ch = body[i]
        if line_start and depth == 1:
            am = re.match(r"\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=", body[i:])
            if am:
                attrs.append(am.group(1))
        line_start = ch == "\n"
        if ch == "#":
            i = body.index("\n", i)
            continue
        depth += {"{": 1, "}": -1, "(": 0}.get(ch, 0)
        i += 1
    return sorted(set(attrs))


def record(source, version, git_dir):
    tag = f"v{version}"
    files = subprocess.run(["git", "-C", str(git_dir), "ls-tree", "--name-only", tag],
                           check=True, capture_output=True, text=True).stdout.split()
    inputs = {}
    for name in sorted(f for f in files if f.endswith(".tf")):
        text = subprocess.run(["git", "-C", str(git_dir), "show", f"{tag}:{name}"],
                              check=True, capture_output=True, text=True).stdout
        for var, body in blocks_of(text, "variable"):
            inputs[var] = {"required": not re.search(r"^\s*default\s*=", body, re.M),
                           "attributes": type_attributes(body)}
    if not inputs:
        sys.exit(f"{source} {tag}: no variables found in {git_dir}")
    # The provider versions the release requires: the roots' constraints must allow them.
    versions = subprocess.run(["git", "-C", str(git_dir), "show", f"{tag}:versions.tf"],
                              check=True, capture_output=True, text=True).stdout
    providers = dict(re.findall(r'source\s*=\s*"hashicorp/(\w+)"\s*\n\s*version\s*=\s*"([^"]+)"', versions))
    path = out_path(source, version)
    path.write_text(json.dumps({"source": source, "version": version, "inputs": inputs, "providers": providers},
                               indent=1, sort_keys=True) + "\n")
    print(f"{path.relative_to(REPO)}: {len(inputs)} inputs")


def pinned_modules():
    """(source, version) of every registry module call under infra/."""
    found = set()
    for tf in sorted((REPO / "infra").rglob("*.tf")):
        for _, body in blocks_of(tf.read_text(), "module"):
            src = re.search(r'^\s*source\s*=\s*"([^"]+)"', body, re.M).group(1)
            ver = re.search(r'^\s*version\s*=\s*"([^"]+)"', body, re.M)
            if not src.startswith("."):
                found.add((src, ver.group(1) if ver else None))
    return sorted(found)


def git_dir_for(source, mirror):
    if mirror:
        namespace, name, provider = source.split("/")
        return Path(mirror) / f"{namespace}+terraform-{provider}-{name}" / "repo"
    tmp = tempfile.mkdtemp()
    subprocess.run(["git", "clone", "--quiet", "--bare", repo_url(source), tmp], check=True)
    return Path(tmp)


def main(argv):
    OUT.mkdir(parents=True, exist_ok=True)
    if argv and argv[0] == "--all":
        mirror = argv[1] if len(argv) > 1 else None
        for source, version in pinned_modules():
            if not version or not re.fullmatch(r"\d+\.\d+\.\d+", version):
                sys.exit(f"{source}: pin an exact version (got {version!r})")
            record(source, version, git_dir_for(source, mirror))
        return
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    source, version = argv[0], argv[1]
    record(source, version, Path(argv[2]) if len(argv) == 3 else git_dir_for(source, None))


if __name__ == "__main__":
    main(sys.argv[1:])
