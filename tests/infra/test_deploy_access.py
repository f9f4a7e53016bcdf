"""The deploy job can do what .circleci/scripts/deploy.sh does: the environment's deploy role may
read every ECR repository the script reads (the chart it installs, the image repository holding
the cosign signature it verifies), and those repositories exist (infra/global). The script's
login-before-verify order is run for real in test_circleci_scripts.py."""
import re

from hcl import ENVS, INFRA, REPO, blocks, env_module

SCRIPTS = REPO / ".circleci" / "scripts"
READ = {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"}


def repositories_deploy_reads():
    deploy = (SCRIPTS / "deploy.sh").read_text()
    publish_chart = (SCRIPTS / "publish-chart.sh").read_text()
    # Images and signatures: "$ECR_REGISTRY/<repo>@..." (cosign verify).
    images = set(re.findall(r'\$ECR_REGISTRY/([a-z0-9/_-]+)@', deploy))
    # Charts: whatever publish-chart.sh writes as CHART_REPOSITORY, and deploy.sh's fallback.
    namespaces = set(re.findall(r"^\s*namespace=(\S+)$", publish_chart, re.M))
    charts = {f"{n}/ratecast" for n in namespaces}
    charts |= set(re.findall(r"\$\{CHART_REPOSITORY:-([^}]+)\}", deploy))
    assert "cosign verify" in deploy and "oci://$ECR_REGISTRY/$chart_repository" in deploy
    return images, charts


def test_the_script_reads_the_image_and_both_chart_repositories():
    images, charts = repositories_deploy_reads()
    assert images == {"ratecast"}
    assert charts == {"charts/ratecast", "charts/main/ratecast"}


def test_the_deploy_role_can_read_every_repository_the_script_reads():
    images, charts = repositories_deploy_reads()
    env = INFRA / "modules" / "environment"
    granted = set(blocks(env, "variable")["deploy_repository_names"]["default"])
    assert images | charts <= granted, f"deploy role cannot read {sorted((images | charts) - granted)}"
    policy = blocks(env / "main.tf", "data")["aws_iam_policy_document"]["deploy"]
    reads = [s for s in policy["statement"] if READ <= set(s["actions"])]
    assert len(reads) == 1
    assert reads[0]["resources"] == "${[for r in var.deploy_repository_names : \"${local.arn_of}:ecr:${local.region}:${data.aws_caller_identity.current.account_id}:repository/${r}\"]}"
    # Logging in needs the account-wide token action.
    assert any(s["actions"] == ["ecr:GetAuthorizationToken"] for s in policy["statement"])
    # Every environment takes the default (no env root narrows it).
    assert all("deploy_repository_names" not in env_module(e) for e in ENVS)


def test_the_repositories_exist():
    images, charts = repositories_deploy_reads()
    created = set(blocks(INFRA / "global", "variable")["repositories"]["default"])
    assert images | charts <= created
