#!/usr/bin/env python3
"""Builds the chart README's values table from the `# --` comments of values.yaml.

A `# -- text` line documents the key below it; a documented map or list is one row (its content is
the default). Every other key must be a map whose keys are documented in turn, so an undocumented
knob is an error.

  values_table.py            print the table
  values_table.py --check    exit 1 when README.md's table (between the markers) is out of date
  values_table.py --write    rewrite that part of README.md
"""
import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy/helm/ratecast"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):")
DOC = re.compile(r"^\s*# -- (.*)$")


def documented_keys(text):
    """Yields (dotted path, description) for each `# --` documented key, in file order."""
    stack, doc = [], None
    for line in text.splitlines():
        if m := DOC.match(line):
            doc = m.group(1)
            continue
        m = KEY.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if doc is not None:
            yield ".".join(k for _, k in stack), doc
            doc = None


def lookup(values, path):
    for key in path.split("."):
        values = values[key]
    return values


def undocumented(values, documented, prefix=""):
    """Paths of knobs neither documented nor inside a documented key."""
    missing = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in documented:
            continue
        if isinstance(value, dict) and value:
            missing += undocumented(value, documented, path + ".")
        else:
            missing.append(path)
    return missing


def escape(cell):
    return cell.replace("|", "\\|")


def table():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = list(documented_keys(text))
    missing = undocumented(values, {path for path, _ in rows})
    if missing:
        sys.exit(f"values.yaml keys without a `# --` description: {', '.join(missing)}")
    lines = ["| Key | Default | Description |", "| --- | --- | --- |"]
    for path, doc in rows:
        default = escape(json.dumps(lookup(values, path), ensure_ascii=False))
        lines.append(f"| `{path}` | `{default}` | {escape(doc)} |")
    return "\n".join(lines) + "\n"


def main():
    generated = table()
    if len(sys.argv) == 1:
        print(generated, end="")
        return
    readme = CHART / "README.md"
    text = readme.read_text()
    head, rest = text.split(BEGIN + "\n", 1)
    current, tail = rest.split(END, 1)
    if sys.argv[1] == "--check":
        if current != generated:
            sys.exit("README.md values table is out of date: run python3 .ci/helm/values_table.py --write")
    elif sys.argv[1] == "--write":
        readme.write_text(f"{head}{BEGIN}\n{generated}{END}{tail}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
