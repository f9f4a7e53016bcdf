"""The metric contract (deploy/helm/ratecast/metrics.txt) and the ratecast_* names that the chart
and the platform read, found in their sources (so a name in a branch no value set renders is
still seen)."""
import re

from conftest import CHART, REPO

CONTRACT_FILE = CHART / "metrics.txt"
# Everything that queries the binary's metrics: alerts, dashboard, HPA (templates, dashboards,
# values) and the prometheus-adapter rule serving the HPA's metric (Terraform).
READERS = [*sorted((CHART / "templates").rglob("*.yaml")), *sorted((CHART / "dashboards").glob("*.json")),
           *sorted(CHART.glob("values*.yaml")), REPO / "infra" / "modules" / "platform" / "main.tf"]
SUFFIXES = re.compile(r"_(bucket|sum|count)$")


def contract():
    names = [line.strip() for line in CONTRACT_FILE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert len(names) == len(set(names)), "duplicate names in metrics.txt"
    return set(names)


def metric_names(text):
    """Metric families named in PromQL or config text (histogram series by their base name)."""
    return {SUFFIXES.sub("", n) for n in re.findall(r"\bratecast_[a-z_]+", text)}


def names_read_by_the_chart_and_platform():
    used = {}
    for path in READERS:
        for name in metric_names(path.read_text()):
            used.setdefault(name, []).append(str(path.relative_to(REPO)))
    return used
