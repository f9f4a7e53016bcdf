#!/usr/bin/env python3
"""Conformance of the chart with the real image: what the chart renders must work in that image.

Renders the chart (production values, standalone and in demo mode so no API key, Redis or Internet
is needed), then runs the image in Docker exactly as the kubelet would start the rendered
container: user and group,
read-only root filesystem, dropped capabilities, no-new-privileges, the default (RuntimeDefault)
seccomp profile, the rendered environment, args, ports and resource limits. It then
  - probes startup, readiness and liveness like the kubelet: HTTP GET on the pod IP, the probe's
    port and path, its timeout, success on 200-399;
  - scrapes the metrics port the ServiceMonitor names, and checks /metrics is not on the app port;
  - runs the `helm test` pod's containers (same image, args and securityContext) against the
    Service name, as a network alias;
  - sends SIGTERM with a WebSocket open: the socket must get close code 1001 and the process must
    exit 0 within the server's shutdown grace, which the chart's grace period is computed from.

Usage: conformance.py IMAGE   (HELM4 names the helm binary; needs docker and websocket-client)
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import websocket
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/ratecast"
RELEASE = NAMESPACE = "ratecast"
KUBE_PROBE_AGENT = "kube-probe/1.35"


def run(*args, check=True, timeout=None):
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        raise SystemExit(1)


def render(image):
    repository, tag = image.rsplit(":", 1)
    out = run(os.environ["HELM4"], "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
              "-f", str(CHART / "values-prod.yaml"), "--set", "config.demo=true",
              # Standalone: prod's cluster mode needs a Redis this Docker network does not have
              # (cluster mode against a real redis-server: tests/helm/test_metric_contract.py).
              "--set", "cluster.redis.enabled=false",
              "--set", "ingress.alb.certificateArn=arn:aws:acm:eu-west-1:123456789012:certificate/conformance",
              "--set", f"image.repository={repository}", "--set", f"image.tag={tag}").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    test_pod = next(d for d in docs if d["kind"] == "Pod" and d["metadata"]["annotations"]["helm.sh/hook"] == "test")
    service = next(d for d in docs if d["kind"] == "Service")
    return deployment["spec"]["template"]["spec"], test_pod["spec"], service


def quantity(value, cpu=False):
    """Kubernetes quantity -> Docker flag value (CPUs, or bytes)."""
    value = str(value)
    if cpu:
        return str(int(value[:-1]) / 1000 if value.endswith("m") else float(value))
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return str(int(value[:-2]) * units[value[-2:]]) if value[-2:] in units else value


def docker_run_args(pod, c, network, aliases=()):
    """`docker run` flags reproducing the kubelet's container for pod spec `pod`, container `c`."""
    sc = {**{k: v for k, v in pod.get("securityContext", {}).items() if k in ("runAsUser", "runAsGroup")},
          **c["securityContext"]}
    check(sc["seccompProfile"] == {"type": "RuntimeDefault"}, f"{c['name']}: seccomp RuntimeDefault (Docker's default profile)")
    check(sc["runAsNonRoot"] and sc["runAsUser"] != 0, f"{c['name']}: non-root numeric user {sc['runAsUser']}")
    args = ["--network", network, "--user", f"{sc['runAsUser']}:{sc['runAsGroup']}"]
    if sc["allowPrivilegeEscalation"] is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc["readOnlyRootFilesystem"]:
        args.append("--read-only")
    for cap in sc["capabilities"]["drop"]:
        args += ["--cap-drop", cap]
    for alias in aliases:
        args += ["--network-alias", alias]
    limits = c["resources"]["limits"]
    args += ["--memory", quantity(limits["memory"]), "--cpus", quantity(limits["cpu"], cpu=True)]
    for e in c.get("env", []):
        if "value" in e:
            args += ["-e", f"{e['name']}={e['value']}"]
        else:
            # Secret-backed (the API key): a stand-in value, as if the Secret existed.
            args += ["-e", f"{e['name']}=conformance-placeholder"]
    check("command" not in c, f"{c['name']}: no command override: the image entrypoint runs the args")
    return args


def http_get(url, timeout):
    request = urllib.request.Request(url, headers={"User-Agent": KUBE_PROBE_AGENT, "Accept": "*/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return None, str(err)


def probe_until_success(ip, ports, name, probe):
    """The kubelet's HTTP probe: up to failureThreshold attempts, periodSeconds apart."""
    get = probe["httpGet"]
    port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
    url = f"http://{ip}:{port}{get['path']}"
    for attempt in range(1, probe.get("failureThreshold", 3) + 1):
        status, body = http_get(url, probe.get("timeoutSeconds", 1))
        if status is not None and 200 <= status < 400:
            check(True, f"{name} GET {get['path']} on port {get['port']} ({port}): {status} {body.strip()} (attempt {attempt})")
            return body
        time.sleep(probe.get("periodSeconds", 10))
    check(False, f"{name} GET {url}: last answer {status} {body.strip()[:200]}")


def main():
    # A TERM (a CI timeout) still runs the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    image = sys.argv[1]
    pod, test_pod, service = render(image)
    c = next(x for x in pod["containers"] if x["name"] == "ratecast")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env["RATECAST_DEMO"] == "true", "rendered in demo mode (no API key or Internet needed)")
    check(service["spec"]["ports"][0]["port"] == ports["http"],
          "Service port equals the container port (so the test pod's URLs work through a network alias)")
    service_name = service["metadata"]["name"]
    network = f"ratecast-conformance-{os.getpid()}"
    server = f"{network}-server"
    run("docker", "network", "create", network)
    try:
        run("docker", "run", "-d", "--name", server, *docker_run_args(pod, c, network, [service_name]),
            image, *c.get("args", []))
        ip = run("docker", "inspect", "-f", f"{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}",
                 server).stdout.strip()
        print(f"server container {server} at {ip}, ports {ports}", flush=True)
        inspect = json.loads(run("docker", "inspect", server).stdout)[0]
        host = inspect["HostConfig"]
        check(host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
              and inspect["Config"]["User"] == "65532:65532", "container runs with the rendered security settings")

        probe_until_success(ip, ports, "startupProbe", c["startupProbe"])
        # Readiness may need a few periods (the first data); the kubelet keeps probing, so do we.
        ready = {**c["readinessProbe"], "failureThreshold": 30}
        check(json.loads(probe_until_success(ip, ports, "readinessProbe", ready)) == {"status": "ready"}, "/readyz says ready")
        check(json.loads(probe_until_success(ip, ports, "livenessProbe", c["livenessProbe"])) == {"status": "ok"}, "/healthz says ok")

        status, body = http_get(f"http://{ip}:{ports['metrics']}/metrics", 5)
        check(status == 200 and "ratecast_seq" in body and "ratecast_ws_connections" in body,
              f"metrics port {ports['metrics']} serves /metrics (status {status})")
        status, _ = http_get(f"http://{ip}:{ports['http']}/metrics", 5)
        check(status == 404, f"/metrics is not on the app port, so NetworkPolicy can restrict it (status {status})")

        # The test pod's deadline bounds each step, as activeDeadlineSeconds bounds the pod.
        deadline = test_pod["activeDeadlineSeconds"]
        for step in test_pod["initContainers"] + test_pod["containers"]:
            name = f"{network}-test-{step['name']}"
            try:
                out = run("docker", "run", "--rm", "--name", name, *docker_run_args(test_pod, step, network),
                          image, *step["args"], check=False, timeout=deadline)
            except subprocess.TimeoutExpired as err:
                run("docker", "rm", "-f", name, check=False)
                stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""
                check(False, f"helm test container {step['name']} still running after {deadline}s: {stderr.strip()[-300:]}")
            check(out.returncode == 0, f"helm test container {step['name']} {' '.join(step['args'])}: exit {out.returncode} {out.stderr.strip()[-300:]}")
            if step["args"][0] == "watch":
                frame = json.loads(out.stdout.splitlines()[0])
                check(frame["type"] == "snapshot" and frame["rates"], "helm test received a snapshot with rates")

        # As the page would connect: with an Origin the chart allows (or none, like a CLI client).
        origins = env.get("RATECAST_ALLOWED_ORIGIN")
        origin = {"origin": origins.split(",")[0]} if origins else {"suppress_origin": True}
        ws = websocket.create_connection(f"ws://{ip}:{ports['http']}/ws", timeout=10, **origin)
        check(json.loads(ws.recv())["type"] == "snapshot", f"WebSocket client ({origin}) got its snapshot")
        grace = int(env["RATECAST_SHUTDOWN_GRACE"].rstrip("s"))
        started = time.monotonic()
        run("docker", "kill", "--signal", "TERM", server)
        code = None
        while code is None and time.monotonic() - started < grace:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big")
        check(code == 1001, f"SIGTERM closes the WebSocket with 1001 (got {code})")
        exit_code = run("docker", "wait", server).stdout.strip()
        elapsed = time.monotonic() - started
        check(exit_code == "0" and elapsed <= grace,
              f"exit {exit_code} {elapsed:.1f}s after SIGTERM, within the {grace}s shutdown grace "
              f"(terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} = preStop "
              f"{c['lifecycle']['preStop']['sleep']['seconds']} + grace + margin)")
    finally:
        logs = run("docker", "logs", "--tail", "20", server, check=False)
        if logs.returncode == 0:
            print("server log tail:\n" + logs.stdout + logs.stderr)
        run("docker", "rm", "-f", server, check=False)
        run("docker", "network", "rm", network, check=False)
    print("conformance: all checks passed")


if __name__ == "__main__":
    main()
