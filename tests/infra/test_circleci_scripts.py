"""Behaviour of the pipeline's scripts, run for real against stub binaries (aws, helm, cosign,
curl, circleci-agent) that record how they were called."""
import json
import os
import shutil
import subprocess
import textwrap

import pytest

from hcl import REPO

SCRIPTS = REPO / ".circleci" / "scripts"


@pytest.fixture
def stubs(tmp_path):
    """A bin dir of recording stubs; returns (env, read_calls). A test gives a stub behaviour by
    writing bash to behaviour/<tool>.sh (see `behave`): it runs after the call is recorded."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("aws", "helm", "cosign", "curl", "circleci-agent", "circleci", "docker", "trivy"):
        stub = bin_dir / tool
        stub.write_text(textwrap.dedent(f"""\
            #!/usr/bin/env bash
            printf '%s\\n' "{tool} $*" >>"{log}"
            # Drain a piped stdin (as `helm registry login --password-stdin` does), or the writer gets SIGPIPE.
            if [ -p /dev/stdin ]; then cat >/dev/null; fi
            # curl --data @FILE: keep the payload for the test.
            for a in "$@"; do case $a in @*) cp "${{a#@}}" "{tmp_path}/curl-payload.json" ;; esac; done
            if [ "{tool} $1 $2" = "aws ecr get-login-password" ]; then echo token; fi
            if [ -f "{tmp_path}/behaviour/{tool}.sh" ]; then source "{tmp_path}/behaviour/{tool}.sh"; fi
            exit 0
            """))
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}

    def calls():
        return log.read_text().splitlines() if log.exists() else []

    return env, calls


def behave(tmp_path, tool, bash):
    (tmp_path / "behaviour").mkdir(exist_ok=True)
    (tmp_path / "behaviour" / f"{tool}.sh").write_text(textwrap.dedent(bash))


def run(script, *args, env, cwd=REPO):
    """Runs a pipeline script the way a CircleCI step does: no stdin, output captured."""
    return subprocess.run([str(SCRIPTS / script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def git(repo, *args):
    identity = ["-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    return subprocess.run(["git", *identity, "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A throwaway git repo holding the continuation config, to run continue.sh in."""
    root = tmp_path / "repo"
    (root / ".circleci").mkdir(parents=True)
    shutil.copy(REPO / ".circleci" / "continue.yml", root / ".circleci" / "continue.yml")
    (root / "src").mkdir()
    (root / "src" / "main.rs").write_text("fn main() {}\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-qm", "base")
    return root


def commit(repo, path, text):
    """Commits one file; returns the previous HEAD, the base the setup workflow compares with."""
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", path)
    return git(repo, "rev-parse", "HEAD~1")


def run_continue(repo, env, base, **extra):
    env = {**env, "CIRCLE_CONTINUATION_KEY": "key", **extra}
    result = run("continue.sh", base, env=env, cwd=repo)
    assert result.returncode == 0, result.stderr
    return json.loads((repo.parent / "curl-payload.json").read_text())


def test_continue_passes_infra_changed_true_when_infra_changed(repo, stubs):
    env, calls = stubs
    base = commit(repo, "infra/envs/dev/main.tf", "# change\n")
    payload = run_continue(repo, env, base)
    assert payload["parameters"] == {"infra-changed": True}
    assert payload["continuation-key"] == "key"
    assert payload["configuration"] == (REPO / ".circleci" / "continue.yml").read_text()
    assert any("circleci.com/api/v2/pipeline/continue" in c for c in calls())


def test_continue_passes_false_when_only_app_code_changed(repo, stubs):
    env, _ = stubs
    base = commit(repo, "src/main.rs", "fn main() { println!(); }\n")
    assert run_continue(repo, env, base)["parameters"] == {"infra-changed": False}


def test_continue_passes_false_for_release_tags(repo, stubs):
    env, _ = stubs
    base = commit(repo, "infra/x.tf", "# change\n")
    assert run_continue(repo, env, base, CIRCLE_TAG="v1.2.3")["parameters"] == {"infra-changed": False}


def test_continue_plans_when_there_is_nothing_to_compare_with(repo, stubs):
    env, _ = stubs
    assert run_continue(repo, env, "")["parameters"] == {"infra-changed": True}


def deploy_env(tmp_path, env, target, chart_version, chart_repository):
    """The deploy job's environment: its context's variables and the publish jobs' workspace files."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "image.env").write_text("IMAGE_DIGEST=sha256:abc\n")
    (workspace / "chart.env").write_text(f"CHART_VERSION={chart_version}\nCHART_REPOSITORY={chart_repository}\n")
    env.update(WORKSPACE=str(workspace), EKS_CLUSTER_NAME=f"ratecast-{target}", AWS_REGION="eu-west-1",
               ECR_REGISTRY="1.dkr.ecr.eu-west-1.amazonaws.com", COSIGN_PUBLIC_KEY="pem",
               INGRESS_CERTIFICATE_ARN="arn:aws:acm:eu-west-1:1:certificate/x")


def test_deploy_verifies_then_upgrades_atomically_with_the_env_values_then_tests(tmp_path, stubs):
    env, calls = stubs
    deploy_env(tmp_path, env, "staging", "0.1.0-g123456789abc", "charts/ratecast")
    # Like the real cosign, verify fails without registry credentials: they come from `cosign login`.
    behave(tmp_path, "cosign", f"""\
        if [ "$1" = login ]; then touch "{tmp_path}/docker-credentials"; fi
        if [ "$1" = verify ] && [ ! -f "{tmp_path}/docker-credentials" ]; then echo "UNAUTHORIZED" >&2; exit 1; fi
        """)
    result = run("deploy.sh", "staging", env=env)
    assert result.returncode == 0, result.stderr
    log = calls()
    order = [c.split()[0] + " " + c.split()[1] for c in log]
    # Logged in to the registry (cosign's and helm's credentials) before anything reads it.
    assert order.index("aws ecr") < order.index("cosign login") < order.index("cosign verify")
    assert order.index("helm registry") < order.index("helm upgrade")
    assert "cosign login 1.dkr.ecr.eu-west-1.amazonaws.com --username AWS --password-stdin" in log
    assert order.index("cosign verify") < order.index("helm upgrade") < order.index("helm test")
    (upgrade,) = [c for c in log if c.startswith("helm upgrade")]
    for part in ("--install ratecast oci://1.dkr.ecr.eu-west-1.amazonaws.com/charts/ratecast",
                 "--version 0.1.0-g123456789abc", "--namespace ratecast",
                 "--values deploy/helm/ratecast/values-staging.yaml", "image.digest=sha256:abc",
                 "ingress.alb.certificateArn=arn:aws:acm:eu-west-1:1:certificate/x", "--atomic", "--wait"):
        assert part in upgrade, part
    assert "cosign verify --key env://COSIGN_PUBLIC_KEY 1.dkr.ecr.eu-west-1.amazonaws.com/ratecast@sha256:abc" in log
    assert "aws eks update-kubeconfig --name ratecast-staging --region eu-west-1" in log


def test_deploy_refuses_without_a_certificate(tmp_path, stubs):
    env, calls = stubs
    env.update(EKS_CLUSTER_NAME="c", AWS_REGION="r", ECR_REGISTRY="e", COSIGN_PUBLIC_KEY="k", WORKSPACE=str(tmp_path))
    env.pop("INGRESS_CERTIFICATE_ARN", None)
    result = run("deploy.sh", "dev", env=env)
    assert result.returncode != 0 and "INGRESS_CERTIFICATE_ARN" in result.stderr
    assert not calls()


def test_terraform_script_rejects_unknown_roots_and_actions(stubs):
    env, _ = stubs
    for args in (["plan", "qa"], ["destroy", "dev"]):
        result = run("terraform.sh", *args, env=env)
        assert result.returncode != 0 and "unknown" in result.stderr


def test_oidc_login_needs_a_token_and_exports_web_identity(tmp_path, stubs):
    env, calls = stubs
    bash_env = tmp_path / "bash_env"
    env.update(BASH_ENV=str(bash_env), AWS_REGION="eu-west-1")
    env.pop("CIRCLE_OIDC_TOKEN_V2", None)
    missing = run("aws-oidc-login.sh", "arn:aws:iam::1:role/r", env=env)
    assert missing.returncode != 0 and "context" in missing.stderr
    env["CIRCLE_OIDC_TOKEN_V2"] = "jwt"
    ok = run("aws-oidc-login.sh", "arn:aws:iam::1:role/r", env=env)
    assert ok.returncode == 0, ok.stderr
    exported = bash_env.read_text()
    assert "export AWS_ROLE_ARN='arn:aws:iam::1:role/r'" in exported
    token_file = tmp_path / ".aws" / "circleci-oidc-token"
    assert f"export AWS_WEB_IDENTITY_TOKEN_FILE='{token_file}'" in exported
    assert token_file.read_text() == "jwt" and oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert "aws sts get-caller-identity --query Arn --output text" in calls()


REGISTRY = "1.dkr.ecr.eu-west-1.amazonaws.com"
SHA = "0123456789abcdef0123456789abcdef01234567"
INDEX = json.dumps({"manifests": [
    {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
    {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
    {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
]})


@pytest.fixture
def publish(tmp_path, stubs):
    """publish-image.sh with stubs for a commit never built: ECR has no such tag, docker builds
    index sha256:idx, nothing is signed yet, trivy finds nothing."""
    env, calls = stubs
    env.update(ECR_REGISTRY=REGISTRY, COSIGN_KEY="awskms:///alias/ratecast-cosign", CIRCLE_SHA1=SHA,
               BUILDX_CACHE=str(tmp_path / "cache"), OUT_DIR=str(tmp_path / "out"), WORKSPACE=str(tmp_path / "ws"))
    env.pop("CIRCLE_TAG", None)
    behave(tmp_path, "aws", 'if [ "$2" = describe-images ]; then exit 1; fi\n')
    behave(tmp_path, "docker", f"""\
        if [ "$1 $2" = "buildx build" ]; then
          while [ $# -gt 0 ]; do
            if [ "$1" = --metadata-file ]; then echo '{{"containerimage.digest": "sha256:idx"}}' >"$2"; fi
            if [ "$1" = --cache-to ]; then d="${{2#*dest=}}"; mkdir -p "${{d%%,*}}"; fi
            shift
          done
        fi
        if [ "$2 $3" = "imagetools inspect" ]; then echo '{INDEX}'; fi
        # The pulled platform image: its size and filesystem, for .ci/docker-image-checks.sh.
        if [ "$1 $2" = "image inspect" ]; then cat "{tmp_path}/image-size"; fi
        if [ "$1" = create ]; then echo container-id; fi
        if [ "$1" = export ]; then tar -C "{tmp_path}/rootfs" -cf - usr etc; fi
        """)
    (tmp_path / "image-size").write_text("21951165\n")
    for path in ("usr/local/bin/ratecast", "etc/ssl/certs/ca-certificates.crt"):
        (tmp_path / "rootfs" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rootfs" / path).write_text("x")
    behave(tmp_path, "cosign", 'if [ "$1" = verify ]; then exit 1; fi\n')
    behave(tmp_path, "trivy", """\
        while [ $# -gt 0 ]; do [ "$1" = --output ] && echo "no findings" >"$2"; shift; done
        """)
    return env, calls


def test_publish_builds_scans_attests_then_signs_a_new_commit(tmp_path, publish):
    env, calls = publish
    result = run("publish-image.sh", env=env)
    assert result.returncode == 0, result.stderr
    log = calls()
    (build,) = [c for c in log if c.startswith("docker buildx build")]
    for part in ("--platform linux/amd64,linux/arm64", f"--tag {REGISTRY}/ratecast:{SHA}", "--push",
                 f"REVISION={SHA}"):
        assert part in build, part
    for arch in ("amd64", "arm64"):
        assert any(c.startswith(f"trivy image --platform linux/{arch} --severity HIGH,CRITICAL --ignore-unfixed "
                                "--exit-code 1") for c in log), arch
        assert any(c.startswith("cosign attest") and "--type cyclonedx" in c and c.endswith(f"ratecast@sha256:{arch[:3]}")
                   for c in log), arch
    attests = [i for i, c in enumerate(log) if c.startswith("cosign attest")]
    (sign,) = [i for i, c in enumerate(log) if c.startswith("cosign sign")]
    assert max(attests) < sign and log[sign].endswith(f"--recursive --key awskms:///alias/ratecast-cosign {REGISTRY}/ratecast@sha256:idx")
    assert (tmp_path / "ws" / "image.env").read_text() == "IMAGE_DIGEST=sha256:idx\n"
    assert not any("imagetools create" in c for c in log), "no release tag on a main build"


def test_publish_fails_before_signing_when_trivy_finds_a_fixable_vulnerability(tmp_path, publish):
    env, calls = publish
    behave(tmp_path, "trivy", """\
        while [ $# -gt 0 ]; do [ "$1" = --output ] && echo "CVE-2099-0001 HIGH fixed in 1.2" >"$2"; shift; done
        exit 1
        """)
    result = run("publish-image.sh", env=env)
    assert result.returncode != 0 and "CVE-2099-0001" in result.stdout
    assert not any(c.startswith(("cosign sign", "cosign attest")) for c in calls())
    assert not (tmp_path / "ws" / "image.env").exists()


def test_release_tag_retags_the_signed_digest_without_rebuilding(tmp_path, publish):
    env, calls = publish
    env["CIRCLE_TAG"] = "v1.2.3"
    behave(tmp_path, "aws", f"""\
        if [ "$2" = describe-images ]; then
          case "$*" in *imageTag={SHA}*) echo sha256:idx ;; *) exit 1 ;; esac
        fi
        """)
    behave(tmp_path, "cosign", "exit 0\n")
    result = run("publish-image.sh", env=env)
    assert result.returncode == 0, result.stderr
    log = calls()
    assert not any(c.startswith(("docker buildx build", "trivy", "cosign sign", "cosign attest")) for c in log)
    assert f"docker buildx imagetools create --tag {REGISTRY}/ratecast:1.2.3 {REGISTRY}/ratecast@sha256:idx" in log


def chart_version():
    text = (REPO / "deploy" / "helm" / "ratecast" / "Chart.yaml").read_text()
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("version:"))


@pytest.mark.parametrize("tag, version", [(None, f"{chart_version()}-g{SHA[:12]}"), ("v2.0.1", "2.0.1")])
def test_chart_version_is_a_unique_prerelease_on_main_and_the_release_on_tags(tmp_path, stubs, tag, version):
    env, calls = stubs
    env.update(ECR_REGISTRY=REGISTRY, CIRCLE_SHA1=SHA, WORKSPACE=str(tmp_path / "ws"))
    env.pop("CIRCLE_TAG", None)
    if tag:
        env["CIRCLE_TAG"] = tag
    behave(tmp_path, "aws", 'if [ "$2" = describe-images ]; then exit 1; fi\n')
    result = run("publish-chart.sh", env=env)
    assert result.returncode == 0, result.stderr
    log = calls()
    app_version = version if tag else SHA
    assert f"helm package deploy/helm/ratecast --version {version} --app-version {app_version} --destination /tmp/chart" in log
    # Releases and main's pre-releases in separate repositories (ECR lifecycle patterns cannot
    # tell X.Y.Z from X.Y.Z-g<sha>).
    namespace = "charts" if tag else "charts/main"
    assert f"helm push /tmp/chart/ratecast-{version}.tgz oci://{REGISTRY}/{namespace}" in log
    assert f"aws ecr describe-images --repository-name {namespace}/ratecast --image-ids imageTag={version}" in log
    assert (tmp_path / "ws" / "chart.env").read_text() == f"CHART_VERSION={version}\nCHART_REPOSITORY={namespace}/ratecast\n"


def test_chart_already_in_ecr_is_not_pushed_again(tmp_path, stubs):
    env, calls = stubs
    env.update(ECR_REGISTRY=REGISTRY, CIRCLE_SHA1=SHA, WORKSPACE=str(tmp_path / "ws"))
    env.pop("CIRCLE_TAG", None)
    result = run("publish-chart.sh", env=env)
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith(("helm package", "helm push")) for c in calls())
    assert (tmp_path / "ws" / "chart.env").exists()


def test_deploy_installs_the_chart_from_the_repository_it_was_published_to(tmp_path, stubs):
    env, calls = stubs
    deploy_env(tmp_path, env, "dev", "0.1.0-gabc", "charts/main/ratecast")
    result = run("deploy.sh", "dev", env=env)
    assert result.returncode == 0, result.stderr
    (upgrade,) = [c for c in calls() if c.startswith("helm upgrade")]
    assert f"oci://{REGISTRY}/charts/main/ratecast --version 0.1.0-gabc" in upgrade


def jwt(claims):
    import base64
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{part}.sig"


def test_oidc_refresh_swaps_in_a_new_token_with_the_same_audience(tmp_path, stubs):
    env, calls = stubs
    token_file = tmp_path / "token"
    token_file.write_text("old")
    env.update(CIRCLE_OIDC_TOKEN_V2=jwt({"aud": "org-123", "sub": "org/org-123/project/p/user/u"}),
               AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file))
    behave(tmp_path, "circleci", 'echo "new-token"\n')
    result = run("oidc-token-refresh.sh", "--once", env=env)
    assert result.returncode == 0, result.stderr
    assert 'circleci run oidc get --claims {"aud":"org-123"}' in calls()
    assert token_file.read_text().strip() == "new-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"


def test_oidc_refresh_keeps_the_old_token_when_the_cli_fails(tmp_path, stubs):
    env, _ = stubs
    token_file = tmp_path / "token"
    token_file.write_text("old")
    env.update(CIRCLE_OIDC_TOKEN_V2=jwt({"aud": ["org-123"]}), AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file))
    behave(tmp_path, "circleci", "exit 1\n")
    result = run("oidc-token-refresh.sh", "--once", env=env)
    assert result.returncode == 0 and "keeping the current one" in result.stderr
    assert token_file.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("token.")] == []


def test_publish_holds_each_platform_image_to_the_docker_stage_limits(tmp_path, publish):
    env, calls = publish
    result = run("publish-image.sh", env=env)
    assert result.returncode == 0, result.stderr
    log = calls()
    for arch in ("amd64", "arm64"):
        assert f"docker pull --quiet --platform linux/{arch} {REGISTRY}/ratecast@sha256:idx" in log
    assert result.stdout.count("ok: size <= 30000000 bytes") == 2
    assert result.stdout.count("ok: no shell") == 2


@pytest.mark.parametrize("defect", ["size", "shell"])
def test_publish_fails_before_signing_an_image_over_the_limits(tmp_path, publish, defect):
    env, calls = publish
    if defect == "size":
        (tmp_path / "image-size").write_text("30000001\n")
    else:
        (tmp_path / "rootfs" / "bin").mkdir()
        (tmp_path / "rootfs" / "bin" / "sh").write_text("x")
        behave(tmp_path, "docker", (tmp_path / "behaviour" / "docker.sh").read_text().replace("usr etc", "usr etc bin"))
    result = run("publish-image.sh", env=env)
    assert result.returncode != 0
    assert ("over 30000000" if defect == "size" else "runtime image has: bin/sh") in result.stderr
    assert not any(c.startswith(("cosign sign", "cosign attest")) for c in calls())
