"""Semantic checks of the CircleCI pipeline beyond the vendored JSON schema: every file the config
and its scripts refer to exists, workflows reference defined jobs, the release flow and the
approvals are in place, and AWS access is OIDC-only."""
import pathlib
import re
import shlex

import pytest
import yaml

from hcl import ENVS, REPO

CIRCLECI = REPO / ".circleci"
CONFIGS = [CIRCLECI / "config.yml", CIRCLECI / "continue.yml"]
SCRIPTS = sorted((CIRCLECI / "scripts").glob("*.sh"))
DOCS = REPO / "docs" / "ci-cd.md"
ROOTS = ("global",) + ENVS
TEST_STAGES = re.search(r"ALL_STAGES=\(([^)]*)\)", (REPO / ".ci" / "test.sh").read_text()).group(1).split()

# Placeholders the config and scripts use, and the values they take.
EXPANSIONS = {
    "<< parameters.target >>": ENVS,
    "$env": ENVS,
    "<< parameters.stage >>": TEST_STAGES,
    "$stage": TEST_STAGES,
    "<< parameters.root >>": ROOTS,
    "$root": ENVS,
}
PATH_TOKEN = re.compile(
    r"(?<![\w/.$-])((?:\.circleci|\.ci|deploy|infra|docs|src|tests)/(?:[\w./$-]|<< [\w.]+ >>)*[\w>])"
    r"(?=[\s\"'`)|;:]|$)"
    r"|(?<![\w/.-])(Dockerfile|Cargo\.lock|Cargo\.toml)(?![\w.])"
)


def load(path):
    return yaml.safe_load(path.read_text())


def continued():
    return load(CIRCLECI / "continue.yml")


def expand(token):
    for placeholder, values in EXPANSIONS.items():
        if placeholder in token:
            return [t for v in values for t in expand(token.replace(placeholder, v))]
    return [token]


def referenced_paths():
    for source in CONFIGS + SCRIPTS:
        for line in source.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            for match in PATH_TOKEN.finditer(line):
                yield source, match.group(1) or match.group(2)


def test_every_referenced_file_exists():
    refs = list(referenced_paths())
    assert len(refs) >= 15, refs
    missing = sorted({f"{src.name}: {path}" for src, tok in refs for path in expand(tok) if not (REPO / path).exists()})
    assert not missing, "referenced but missing:\n" + "\n".join(missing)


def test_checksum_keys_name_existing_files():
    for config in CONFIGS:
        for name in re.findall(r'checksum "([^"]+)"', config.read_text()):
            assert (REPO / name).is_file(), f"{config.name}: cache key checksums missing {name}"


def test_scripts_are_executable_and_strict():
    assert SCRIPTS
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
        assert "set -euo pipefail" in script.read_text(), script


def test_setup_workflow_continues_with_the_pipeline():
    setup = load(CIRCLECI / "config.yml")
    assert setup["setup"] is True
    assert "--rawfile config .circleci/continue.yml" in (CIRCLECI / "scripts" / "continue.sh").read_text()
    assert "infra-changed" in continued()["parameters"]


def workflow_entries(workflow):
    for entry in continued()["workflows"][workflow]["jobs"]:
        job, spec = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        yield job, spec or {}


def entry_names(job, spec):
    """Names a workflow entry answers to: its name; a matrix also one per combination (its plain
    name, in requires, waits for all of them)."""
    if "name" in spec:
        return [spec["name"]]
    matrix = spec.get("matrix", {}).get("parameters", {})
    if not matrix:
        return [job]
    ((_, values),) = matrix.items()
    return [job] + [f"{job}-{v}" for v in values]


@pytest.mark.parametrize("workflow", ["app", "terraform"])
def test_workflows_reference_defined_jobs_and_requirements(workflow):
    jobs = continued()["jobs"]
    names = set()
    entries = list(workflow_entries(workflow))
    for job, spec in entries:
        assert job in jobs or spec.get("type") == "approval", f"{workflow}: unknown job {job}"
        names.update(entry_names(job, spec))
    for job, spec in entries:
        matrix = spec.get("matrix", {}).get("parameters", {})
        for req in spec.get("requires", []):
            variants = [req.replace("<< matrix.root >>", r) for r in matrix.get("root", [None])] if matrix else [req]
            for name in variants:
                assert name in names, f"{workflow}: {job} requires unknown {name}"


def test_every_push_runs_lint_and_every_test_stage():
    entries = dict(workflow_entries("app"))
    assert "branches" not in entries["lint-rust"].get("filters", {})
    assert entries["test"]["matrix"]["parameters"]["stage"] == TEST_STAGES
    assert continued()["jobs"]["test"]["parameters"]["stage"]["enum"] == TEST_STAGES
    lint = yaml.safe_dump(continued()["jobs"]["lint-rust"])
    assert "cargo fmt --all -- --check" in lint and "-D warnings" in lint
    # hadolint, the Helm checks and checkov are inside these stages.
    stages = REPO / ".ci" / "stages"
    for stage in TEST_STAGES:
        assert (stages / f"{stage}.sh").is_file(), f".ci/stages/{stage}.sh is missing"
    # Run as commands (not named in a comment, a log line or a string), on what they must
    # check, and a finding fails the stage (no `|| true`).
    hadolint = invocations(stages / "docker.sh", "hadolint")
    assert any(
        any(pathlib.PurePath(a).name == "Dockerfile" for a in args) and fails(on_error)
        for args, on_error in hadolint
    ), f"docker.sh never runs hadolint on the Dockerfile so that a finding fails: {hadolint}"
    checkov = invocations(stages / "infra.sh", "checkov")
    assert any(
        _follows(args, "--directory", "infra") and fails(on_error) for args, on_error in checkov
    ), f"infra.sh never runs checkov on infra/ so that a finding fails: {checkov}"
    assert (stages / "helm.sh").is_file()


def invocations(script, program):
    """Every command of a shell script whose program is `program` (by base name, wherever it is
    installed), as (arguments, the first word after its `||` or None). Comments, log lines and
    quoted text do not count: the script is split the way the shell splits it (continuation
    lines joined, `#` comments dropped, `;`, `&&`, `||` and `|` separating commands)."""
    text = re.sub(r"\\\n", " ", script.read_text())
    found = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            words = list(lexer)
        except ValueError:  # an unbalanced quote: a heredoc or a multi-line string
            continue
        commands, current = [], []
        for word in words:
            if word in (";", "&&", "||", "|", "&"):
                commands.append((current, word))
                current = []
            else:
                current.append(word)
        commands.append((current, None))
        for i, (command, separator) in enumerate(commands):
            if command and pathlib.PurePath(command[0]).name == program:
                after = commands[i + 1][0] if separator == "||" and i + 1 < len(commands) else None
                found.append((command[1:], after[0] if after else None))
    return found


def fails(on_error):
    """A failing command still fails the (strict, `set -e`) script: nothing after it, or `fail`."""
    return on_error in (None, "fail", "exit")


def _follows(args, flag, value):
    return any(a == flag and b == value for a, b in zip(args, args[1:]))


def test_release_flow_dev_on_main_staging_on_tags_prod_after_approval():
    entries = {entry_names(j, s)[0]: (j, s) for j, s in workflow_entries("app")}
    dev, staging, hold, prod = (entries[n][1] for n in ("deploy-dev", "deploy-staging", "hold-prod", "deploy-prod"))
    assert dev["filters"]["branches"]["only"] == "main" and "tags" not in dev["filters"]
    assert set(dev["requires"]) == {"publish-image", "publish-chart"}
    tag_pattern = staging["filters"]["tags"]["only"]
    assert re.fullmatch(tag_pattern.strip("/"), "v1.2.3") and not re.fullmatch(tag_pattern.strip("/"), "v1.2")
    assert staging["filters"]["branches"]["ignore"] == "/.*/"
    assert hold["type"] == "approval" and hold["requires"] == ["deploy-staging"]
    assert prod["requires"] == ["hold-prod"]
    for env, spec in (("dev", dev), ("staging", staging), ("prod", prod)):
        assert spec["target"] == env and f"ratecast-deploy-{env}" in spec["context"]


def test_terraform_plans_every_root_and_applies_each_behind_an_approval():
    entries = list(workflow_entries("terraform"))
    specs = {j: s for j, s in entries if "matrix" in s}
    for job in ("terraform-check", "terraform-plan", "terraform-apply"):
        assert specs[job]["matrix"]["parameters"]["root"] == list(ROOTS)
    assert specs["terraform-apply"]["requires"] == ["hold-apply-<< matrix.root >>"]
    assert specs["terraform-apply"]["filters"]["branches"]["only"] == "main"
    holds = {j: s for j, s in entries if s.get("type") == "approval"}
    assert set(holds) == {f"hold-apply-{r}" for r in ROOTS}
    assert continued()["workflows"]["terraform"]["when"] == "<< pipeline.parameters.infra-changed >>"
    script = (CIRCLECI / "scripts" / "terraform.sh").read_text()
    for command in ("terraform fmt -check", "terraform validate", "terraform plan", "terraform apply"):
        assert command in script


def test_aws_access_is_oidc_only_and_secrets_live_in_contexts():
    for path in CONFIGS + SCRIPTS:
        text = path.read_text()
        assert "AWS_SECRET_ACCESS_KEY" not in text and "AWS_ACCESS_KEY_ID" not in text, path
    assert "CIRCLE_OIDC_TOKEN_V2" in (CIRCLECI / "scripts" / "aws-oidc-login.sh").read_text()
    jobs = continued()["jobs"]
    with_login = {name for name, job in jobs.items() if "aws-login" in yaml.safe_dump(job["steps"])}
    assert with_login >= {"publish-image", "publish-chart", "deploy", "terraform-plan", "terraform-apply"}
    for workflow in ("app", "terraform"):
        for job, spec in workflow_entries(workflow):
            if job in with_login:
                assert spec.get("context"), f"{job}: no context, so no OIDC token and no role ARN"
    # Job-level environment holds paths only; credentials and role ARNs come from contexts.
    for name, job in jobs.items():
        for key in job.get("environment", {}):
            assert not re.search(r"KEY|SECRET|TOKEN|PASSWORD|ROLE", key), f"{name}: {key} belongs in a context"


def test_caching_cargo_and_docker_layers():
    text = (CIRCLECI / "continue.yml").read_text()
    assert "docker_layer_caching: true" in text
    assert "cargo-lint-v1-" in text and "/usr/local/cargo/registry" in text
    assert "buildx-v1-" in text


def test_images_and_tools_are_pinned():
    for config in CONFIGS:
        for image in re.findall(r"image: (\S+)", config.read_text()):
            assert not image.endswith(":latest") and ":" in image, f"{config.name}: unpinned {image}"
    tools = (CIRCLECI / "scripts" / "install-tools.sh").read_text()
    for tool in ("TERRAFORM", "HELM", "TRIVY", "COSIGN"):
        assert re.search(rf"^{tool}_VERSION=\d+\.\d+\.\d+", tools, re.M), tool
    assert "sha256sum --check" in tools


def test_contexts_and_their_variables_are_documented():
    docs = DOCS.read_text()
    text = (CIRCLECI / "continue.yml").read_text()
    for context in set(re.findall(r"ratecast-[a-z-]+", " ".join(re.findall(r"context: \[([^\]]*)\]", text)))):
        assert f"`{context}`" in docs, f"context {context} is not documented in docs/ci-cd.md"
    builtin = re.compile(r"^(CIRCLE_|BASH_ENV$|HOME$|PWD$|OLDPWD$)")
    required = set()
    for script in SCRIPTS:
        required |= set(re.findall(r"\$\{([A-Za-z_]\w*):\?", script.read_text()))
    required |= set(re.findall(r"role-var: (\w+)", text))
    for var in sorted(v for v in required if not builtin.match(v)):
        if var in ("IMAGE_DIGEST", "CHART_VERSION"):
            continue  # produced by the pipeline itself (workspace files)
        assert f"`{var}`" in docs, f"{var} is not documented in docs/ci-cd.md"


def job_scripts(job):
    """The text of a job's steps plus the pipeline scripts they run."""
    steps = yaml.safe_dump(job["steps"])
    scripts = re.findall(r"\.circleci/scripts/([\w-]+\.sh)", steps)
    return steps + "".join((CIRCLECI / "scripts" / s).read_text() for s in scripts)


def test_docker_layer_caching_only_where_the_engines_store_is_used():
    # DLC saves the engine's own image store; a buildx docker-container builder keeps its layers
    # in the builder container, so DLC on such a job is paid for and unused.
    config = continued()
    for name, job in config["jobs"].items():
        machine = config["executors"].get(job.get("executor"), {}).get("machine")
        dlc = isinstance(machine, dict) and machine.get("docker_layer_caching", False)
        if "--driver docker-container" in job_scripts(job):
            assert not dlc, f"{name}: builds with buildx's container driver on an executor with DLC"
    assert config["executors"][config["jobs"]["publish-image"]["executor"]]["machine"].get("docker_layer_caching") is None


def test_macos_job_builds_and_tests_the_client_crates():
    config = continued()
    job = config["jobs"]["macos-client"]
    assert "macos" in config["executors"][job["executor"]]
    text = yaml.safe_dump(job["steps"])
    assert "sh.rustup.rs" in text
    assert "cargo test --locked -p ratecast-client -p ratecast-protocol" in text
    entries = dict(workflow_entries("app"))
    assert "macos-client" in entries and entries["macos-client"]["filters"] == entries["lint-rust"]["filters"]
    # A release is only published once the client passed on macOS too.
    for publish in ("publish-image", "publish-chart"):
        assert "macos-client" in entries[publish]["requires"]


def test_aws_login_keeps_the_oidc_token_fresh_in_the_background():
    steps = continued()["commands"]["aws-login"]["steps"]
    runs = [s["run"] for s in steps]
    assert runs[0]["command"].startswith(".circleci/scripts/aws-oidc-login.sh")
    assert runs[1]["command"] == ".circleci/scripts/oidc-token-refresh.sh" and runs[1]["background"] is True


def test_the_image_limits_are_defined_once_for_the_docker_stage_and_the_publish_job():
    checks = REPO / ".ci" / "docker-image-checks.sh"
    assert re.search(r"^MAX_IMAGE_BYTES=\$\(\(30 \* 1000 \* 1000\)\)$", checks.read_text(), re.M)
    for user in (REPO / ".ci" / "stages" / "docker.sh", CIRCLECI / "scripts" / "publish-image.sh"):
        text = user.read_text()
        assert "docker-image-checks.sh" in text and "check_image_size" in text and "check_image_contents" in text
        assert "1000 * 1000" not in text, f"{user.name} defines a limit of its own"
