"""docker-compose.yml for the Neo4j path (and the optional Ray services): YAML, the Compose schema, and the structure we rely on.

There is no Docker engine here.  The schema check uses the Compose-spec JSON schema that the
`docker-compose` wheel on PyPI ships (`compose/config/compose_spec.json`): from an installed
package if there is one, else from a cached copy, else fetched once with `pip download` (no
install).  If none can be had, that one test is skipped with the reason; the explicit
structure checks below always run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA_WHEEL = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\})")


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution (${X}, ${X:-default}, ${X:?error}, $$) over a parsed document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        val = env.get(name)
        if op in (":-", "-"):
            return val if (val if op == ":-" else val is not None) else arg
        if op in (":?", "?"):
            if not val if op == ":?" else val is None:
                raise ValueError(f"required variable {name} is missing a value: {arg}")
            return val
        return val or ""

    return _VAR.sub(sub, value)


# --------------------------------------------------------------------------- explicit structure
def test_services_and_volumes(doc):
    assert set(doc["services"]) == {"neo4j", "app", "ingest", "ray-head", "ray-worker"}
    assert {"neo4j-data", "artifacts"} <= set(doc["volumes"])


def test_neo4j_service(doc):
    neo = doc["services"]["neo4j"]
    assert re.fullmatch(r"neo4j:5(\.[\w.-]+)?", neo["image"])
    assert neo["environment"]["NEO4J_AUTH"] == "neo4j/${NEO4J_PASSWORD:?set NEO4J_PASSWORD in .env}"
    assert "neo4j-data:/data" in neo["volumes"]  # a named volume, not a bind mount
    hc = neo["healthcheck"]
    assert hc["test"][0] == "CMD-SHELL" and "cypher-shell" in hc["test"][1] and "$${NEO4J_AUTH" in hc["test"][1]
    assert hc["retries"] >= 3 and hc["interval"].endswith("s")
    assert all(p.startswith("127.0.0.1:") for p in neo["ports"])
    assert "127.0.0.1:7687:7687" in neo["ports"]


def test_app_service(doc):
    app = doc["services"]["app"]
    env = app["environment"]
    assert env["NEURFLOW_STORE_URI"] == "bolt://neo4j:7687"
    assert env["NEURFLOW_STORE_PASSWORD"].startswith("${NEO4J_PASSWORD:?")
    assert "127.0.0.1:8501:8501" in app["ports"] and "8501" in app["command"]
    assert app["depends_on"]["neo4j"]["condition"] == "service_healthy"
    assert "build" in app


def test_ingest_service_is_a_one_shot_profile(doc):
    ing = doc["services"]["ingest"]
    assert ing["profiles"] == ["ingest"]
    assert ing["command"][:2] == ["neurflow", "ingest"]
    assert ing["restart"] == "no"
    assert ing["environment"]["NEURFLOW_STORE_URI"] == "bolt://neo4j:7687"
    assert ing["depends_on"]["neo4j"]["condition"] == "service_healthy"
    assert "artifacts:/artifacts" in ing["volumes"]


def test_ray_services_are_an_optional_profile(doc):
    head, worker = doc["services"]["ray-head"], doc["services"]["ray-worker"]
    for svc in (head, worker):
        assert svc["profiles"] == ["ray"]  # `docker compose up` without --profile ray starts neither
        assert svc["image"] == "neurflow-store-ray:latest" and svc["build"]["dockerfile"] == "Dockerfile.ray"
        env = svc["environment"]
        assert env["NEURFLOW_STORE_URI"] == "bolt://neo4j:7687"  # tasks write straight into Neo4j
        assert env["NEURFLOW_STORE_PASSWORD"].startswith("${NEO4J_PASSWORD:?")
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "${RAY_AUTH_TOKEN:-}"
        assert {"artifacts:/artifacts", "cache:/cache"} <= set(svc["volumes"])  # thumbnails land where the app reads
        assert svc["depends_on"]["neo4j"]["condition"] == "service_healthy"
        assert svc["command"][:2] == ["ray", "start"] and "--block" in svc["command"]
    assert "--head" in head["command"] and "--ray-client-server-port=10001" in head["command"]
    assert "--dashboard-host=0.0.0.0" in head["command"] and "--port=6379" in head["command"]
    assert {"127.0.0.1:6379:6379", "127.0.0.1:8265:8265", "127.0.0.1:10001:10001"} == set(head["ports"])
    assert "ray status" in head["healthcheck"]["test"][1]
    assert "--address=ray-head:6379" in worker["command"] and "ports" not in worker
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert doc["services"]["ingest"]["profiles"] == ["ingest"] and "profiles" not in doc["services"]["app"]


def test_ray_image_has_the_project_and_ray():
    text = (ROOT / "Dockerfile.ray").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text  # the same Python as the project image
    assert re.search(r"pip install \"\.\[ray\]\" \"ray\[default\]==2\.60\.0\"", text)
    assert "USER " in text and "EXPOSE 6379 8265 10001" in text
    pins = [d for d in __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]]
    assert pins == ["ray==2.60.0"]  # the image's Ray is the extra's Ray


def test_no_password_is_committed(doc):
    text = COMPOSE.read_text()
    refs = re.findall(r"\$\{NEO4J_PASSWORD([^}]*)\}", text)
    assert len(refs) == 4 and all(r.startswith(":?") for r in refs)  # required, never a default
    assert re.findall(r"^\s*RAY_AUTH_TOKEN:.*$", text, re.M) == ["      RAY_AUTH_TOKEN: ${RAY_AUTH_TOKEN:-}"]  # from .env only
    assert not re.search(r"NEO4J_AUTH:\s*neo4j/[^$]", text) and "NEO4J_AUTH: none" not in text
    with pytest.raises(ValueError, match="set NEO4J_PASSWORD in .env"):
        interpolate(doc, {})
    with pytest.raises(ValueError):
        interpolate(doc, {"NEO4J_PASSWORD": ""})
    env_example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#")
    )
    assert env_example["NEO4J_PASSWORD"] == ""
    assert env_example["RAY_AUTH_TOKEN"] == ""  # the optional Ray services' token: the user's own
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_interpolated_file(doc):
    out = interpolate(doc, {"NEO4J_PASSWORD": "a-long-password"})
    assert out["services"]["neo4j"]["environment"]["NEO4J_AUTH"] == "neo4j/a-long-password"
    assert out["services"]["app"]["environment"]["NEURFLOW_STORE_PASSWORD"] == "a-long-password"
    for name in ("ray-head", "ray-worker"):
        assert out["services"][name]["environment"]["NEURFLOW_STORE_PASSWORD"] == "a-long-password"
        assert out["services"][name]["environment"]["RAY_AUTH_TOKEN"] == ""  # unset in .env: empty, set it to use Ray
    token = interpolate(doc, {"NEO4J_PASSWORD": "a-long-password", "RAY_AUTH_TOKEN": "t0ken"})
    assert token["services"]["ray-worker"]["environment"]["RAY_AUTH_TOKEN"] == "t0ken"
    assert out["services"]["ingest"]["command"] == [
        "neurflow", "ingest", "--model", "fashion-resnet", "--data", "fashion-mnist", "--classes", "all",
    ]  # fmt: skip
    assert "$${" not in json.dumps(out) and "${NEO4J_AUTH#neo4j/}" in out["services"]["neo4j"]["healthcheck"]["test"][1]


def test_dockerfile_builds_the_cli_image():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3" in text
    assert re.search(r"pip install \"?\.\[app\]", text) and "USER " in text and "EXPOSE 8501" in text


# --------------------------------------------------------------------------- the Compose schema
def _compose_schema() -> tuple[dict | None, str]:
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "config" / "compose_spec.json"
        if path.is_file():
            return json.loads(path.read_text()), f"installed package ({path})"
    cache_root = Path(os.environ.get("NEURFLOW_CACHE", ROOT / ".cache" / "neurflow"))
    cached = cache_root / "compose-spec" / "compose_spec.json"
    if cached.is_file():
        return json.loads(cached.read_text()), f"cached copy from {SCHEMA_WHEEL} ({cached})"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, SCHEMA_WHEEL],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            wheel = next(Path(tmp).glob("*.whl"))
            text = zipfile.ZipFile(wheel).read(SCHEMA_MEMBER).decode()
        except (subprocess.SubprocessError, StopIteration, KeyError, OSError) as exc:
            return None, f"no Compose schema available ({type(exc).__name__}: could not fetch {SCHEMA_WHEEL} from the package index)"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(text)
    return json.loads(text), f"fetched from {SCHEMA_WHEEL}"


def test_compose_schema(doc):
    import jsonschema

    schema, source = _compose_schema()
    if schema is None:
        pytest.skip(source)
    print(f"compose schema: {source}")
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = validator_cls(schema)
    for variant in (doc, interpolate(doc, {"NEO4J_PASSWORD": "a-long-password"})):
        errors = sorted(validator.iter_errors(variant), key=lambda e: list(e.path))
        assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    # the schema is strict: an unknown key is an error (so the check above means something)
    bad = {**doc, "services": {**doc["services"], "app": {**doc["services"]["app"], "helthcheck": {}}}}
    assert list(validator.iter_errors(bad))
