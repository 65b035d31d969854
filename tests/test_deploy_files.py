"""The container and cluster files of deploy/ parse and point at things that exist.

No image is built and nothing is started: deploy/Dockerfile, deploy/docker-compose.yml and the
Kubernetes work-pool example (deploy/k8s/) are read as text/YAML/JSON and checked against the
repository (paths, .dockerignore), each other (services, ARGs, volume claims, store paths) and the
flows (entrypoints, parameter names). Each checker returns its problems, and the ``*_catch_*``
tests feed it a broken copy to show that it notices.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

import flows.prefect_env  # noqa: F401  (before anything imports prefect, as the flows do)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
POOL_TEMPLATE = K8S / "base-job-template.json"
K8S_PREFECT_FILE = K8S / "prefect-k8s.yaml"
SERVER_SERVICE = "prefect-server"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _pinned(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


# --- docker compose -------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str) -> str | None:
    """A compose value as it reads with none of its variables set: ``${V:-default}`` gives the
    default; None when the value has to come from the environment (``${V}``, ``${V:?message}``)."""
    out = _substitute(value)
    return None if _REQUIRED in out else out


_REQUIRED = "\0required\0"


def _substitute(value: str) -> str:
    return _VAR.sub(lambda m: m.group(3) if (m.group(2) or "").endswith("-") else _REQUIRED, value)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: _substitute(str(v)) for k, v in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    return {d: {} for d in deps} if isinstance(deps, list) else deps


def _mounts(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(source, target) of each volume; source None when it comes from the environment."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            source, target = _substitute(str(v.get("source", ""))), str(v["target"])
        else:
            source, _, rest = _substitute(v).partition(":")
            target = rest.partition(":")[0]
        out.append((None if _REQUIRED in source else source, target))
    return out


def _is_named_volume(source: str) -> bool:
    return not source.startswith((".", "/", "~")) and "/" not in source


def _container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].partition("/")[0]) for p in service.get("ports") or []}


def compose_problems(spec: dict[str, Any], base: Path = DEPLOY) -> list[str]:
    problems = []
    services = spec.get("services") or {}
    declared_volumes = set(spec.get("volumes") or {})
    arg_names = {name for name, _ in dockerfile_args(DOCKERFILE.read_text())}
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            problems.append(f"{name}: neither image nor build")
        for dep, cond in _depends_on(svc).items():
            if dep not in services:
                problems.append(f"{name}: depends_on {dep!r}, which is not a service")
            elif cond.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name}: waits for {dep!r} to be healthy, but it has no healthcheck")
        build = svc.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            context = (base / interpolate(build.get("context", "."))).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            if not dockerfile.is_file():
                problems.append(f"{name}: dockerfile {dockerfile} does not exist")
            elif dockerfile.resolve() == DOCKERFILE.resolve():
                for arg in build.get("args") or {}:
                    if arg not in arg_names:
                        problems.append(f"{name}: build arg {arg!r} is not an ARG of {DOCKERFILE.name}")
        for source, target in _mounts(svc):
            if not target.startswith("/"):
                problems.append(f"{name}: mount target {target!r} is not absolute")
            if source is None:
                continue  # given by the user's environment
            if _is_named_volume(source):
                if source not in declared_volumes:
                    problems.append(f"{name}: volume {source!r} is not declared under volumes:")
            elif not (base / source).exists():
                problems.append(f"{name}: bind mount {source!r} does not exist (relative to {base})")
        api = _env(svc).get("PREFECT_API_URL")
        if api is not None:
            url = urlparse(api)
            if url.hostname not in services:
                problems.append(f"{name}: PREFECT_API_URL {api} does not name a service")
            elif url.port not in _container_ports(services[url.hostname]) or url.path != "/api":
                problems.append(f"{name}: PREFECT_API_URL {api} is not {url.hostname}'s API (port, /api)")
    return problems


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(COMPOSE)


def test_compose_files_services_and_paths(compose):
    assert {"postgres", SERVER_SERVICE, "worker"} <= set(compose["services"])
    assert compose_problems(compose) == []


def test_compose_checks_catch_typos(compose):
    assert interpolate("${OMNIVEC_MEDIA:-media}") == "media" and interpolate("${A-b}/c") == "b/c"
    assert interpolate("${OMNIVEC_MEDIA:?set it}") is None and interpolate("${OMNIVEC_MEDIA}") is None
    assert _mounts({"volumes": ["${M:-../x}:/data/media:ro", "${M:?}:/y"]}) == [("../x", "/data/media"), (None, "/y")]

    def broken(change) -> list[str]:
        spec = copy.deepcopy(compose)
        change(spec["services"])
        return compose_problems(spec)

    assert broken(lambda s: s["worker"]["build"].update(dockerfile="deploy/Dockerfle"))
    assert broken(lambda s: s["worker"]["build"].update(context="../nowhere"))
    assert broken(lambda s: s["worker"]["build"]["args"].update(BASE_IMAG="x"))
    assert broken(lambda s: s["worker"]["volumes"].append("../flowz:/data/flows:ro"))
    assert broken(lambda s: s["worker"]["volumes"].append("undeclared:/data/x"))
    assert broken(lambda s: s["worker"]["depends_on"].update({"prefect-servr": {"condition": "service_started"}}))
    assert broken(lambda s: s["worker"]["environment"].update(PREFECT_API_URL="http://prefect:4200/api"))
    assert broken(lambda s: s["worker"]["environment"].update(PREFECT_API_URL="http://prefect-server:4201/api"))
    assert broken(lambda s: s["prefect-server"].pop("healthcheck"))


def test_compose_server_on_postgres(compose):
    pg, server = compose["services"]["postgres"], compose["services"][SERVER_SERVICE]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert _depends_on(server)["postgres"]["condition"] == "service_healthy"
    command = " ".join(server["command"]) if isinstance(server["command"], list) else server["command"]
    assert "server start" in command and "--host 0.0.0.0" in command
    db = urlparse(_env(server)["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert db.scheme == "postgresql+asyncpg" and db.hostname == "postgres"
    assert db.path.lstrip("/") == _env(pg)["POSTGRES_DB"] and db.username == _env(pg)["POSTGRES_USER"]
    assert 4200 in _container_ports(server)
    image, _, tag = server["image"].partition(":")
    if image == "prefecthq/prefect":  # same release as the worker's client
        assert tag.startswith(_pinned("prefect") + "-"), tag


def test_compose_worker_runs_the_prefect_yaml_deployments(compose):
    """The worker serves the pool deploy/prefect.yaml names, and mounts the store and media where
    its deployments look for them."""
    services = compose["services"]
    worker = services["worker"]
    assert _env(worker)["PREFECT_API_URL"] == f"http://{SERVER_SERVICE}:4200/api"
    commands = [" ".join(s["command"]) if isinstance(s.get("command"), list) else s.get("command") or ""
                for s in services.values()]
    deploy_cmd = next(c for c in commands if "prefect deploy" in c or "deploy --all" in c)
    prefect_file = re.search(r"--prefect-file\s+(\S+)", deploy_cmd).group(1)
    assert (ROOT / prefect_file).is_file(), prefect_file  # relative to the image's WORKDIR, a copy of the repo
    spec = _yaml(ROOT / prefect_file)
    pools = {d["work_pool"]["name"] for d in spec["deployments"]}
    worker_cmd = " ".join(worker["command"])
    assert pools == {re.search(r"--pool\s+(\S+)", worker_cmd).group(1)}
    assert f"work-pool create {pools.pop()} --type process" in deploy_cmd
    targets = {target for _, target in _mounts(worker)}
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments["ingest"]["parameters"]["settings"]["store"] in targets
    assert deployments["maintain"]["parameters"]["store"] in targets
    assert set(deployments["ingest"]["parameters"]["sources"]) <= targets
    workdir = dict(dockerfile_env(DOCKERFILE.read_text()))["OMNIVEC_HOME"]
    assert workdir == dockerfile_workdir(DOCKERFILE.read_text())


# --- Dockerfile -----------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return out


def dockerfile_args(text: str) -> list[tuple[str, str | None]]:
    return [(a.partition("=")[0], a.partition("=")[2] if "=" in a else None)
            for ins, a in dockerfile_instructions(text) if ins == "ARG"]


def dockerfile_env(text: str) -> list[tuple[str, str]]:
    pairs = []
    for ins, args in dockerfile_instructions(text):
        if ins == "ENV":
            pairs += [tuple(tok.split("=", 1)) for tok in shlex.split(args)]
    return pairs


def dockerfile_workdir(text: str) -> str:
    return [a for ins, a in dockerfile_instructions(text) if ins == "WORKDIR"][-1]


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(rel: str, dockerignore: str) -> bool:
    """Whether .dockerignore keeps ``rel`` (a path relative to the context) out, the way Docker
    reads it: the last matching pattern wins, ``!`` re-includes, a pattern also matches parents."""
    rules = []
    for line in dockerignore.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, _dockerignore_regex(line.lstrip("!").strip("/"))))
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def dockerfile_problems(text: str, context: Path = ROOT, dockerignore: str | None = None) -> list[str]:
    if dockerignore is None:
        path = context / ".dockerignore"
        dockerignore = path.read_text() if path.is_file() else ""
    problems = []
    instructions = dockerfile_instructions(text)
    first_from = next(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    global_args = {name for ins, a in instructions[:first_from] if ins == "ARG" for name in [a.partition("=")[0]]}
    for ins, args in instructions:
        if ins == "FROM":
            for var in re.findall(r"\$\{?(\w+)", args):
                if var not in global_args:
                    problems.append(f"FROM uses ${var}, which no ARG before the first FROM declares")
        if ins not in ("COPY", "ADD"):
            continue
        tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
        if any(t.startswith("--from=") for t in tokens):
            continue  # from another stage or image
        sources = [t for t in tokens if not t.startswith("--")][:-1]
        for source in sources:
            path = context / source
            if not path.exists():
                problems.append(f"{ins} {source}: not in the build context")
            elif dockerignored(source, dockerignore):
                problems.append(f"{ins} {source}: excluded by .dockerignore")
            elif path.is_dir() and all(dockerignored(str(f.relative_to(context)), dockerignore)
                                       for f in path.rglob("*") if f.is_file()):
                problems.append(f"{ins} {source}: every file under it is excluded by .dockerignore")
    return problems


def test_dockerfile_copies_what_exists_and_takes_a_base_image_arg():
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    args = dict(dockerfile_args(text))
    assert args["BASE_IMAGE"], "the base image is a build argument with a default"
    assert "/whl/cpu" in args["TORCH_INDEX_URL"], "the default image gets CPU torch wheels"
    assert "-c constraints.txt" in text, "installed with the tested pins"
    users = [a for ins, a in dockerfile_instructions(text) if ins == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"


def test_dockerfile_checks_catch_typos():
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text.replace("COPY flows ", "COPY flowz ", 1))
    assert dockerfile_problems(text + "\nCOPY scripts ./scripts\n")  # exists, but .dockerignore leaves it out
    assert dockerfile_problems(text.replace("FROM ${BASE_IMAGE}", "FROM ${BASE_IMAGES}", 1))
    assert dockerignored(".venv/bin/python", (ROOT / ".dockerignore").read_text())
    assert not dockerignored("flows/ingest.py", (ROOT / ".dockerignore").read_text())
    assert dockerignored("flows/__pycache__/ingest.cpython-311.pyc", (ROOT / ".dockerignore").read_text())


def test_dockerfile_store_matches_compose_and_deployments(compose):
    env = dict(dockerfile_env(DOCKERFILE.read_text()))
    store = env["OMNIVEC_STORE"]
    deployments = {d["name"]: d for d in _yaml(DEPLOY / "prefect.yaml")["deployments"]}
    assert store == deployments["maintain"]["parameters"]["store"]
    assert store in {target for _, target in _mounts(compose["services"]["worker"])}
    volumes = [a for ins, a in dockerfile_instructions(DOCKERFILE.read_text()) if ins == "VOLUME"]
    assert any(store in v for v in volumes)


# --- Kubernetes work pool -------------------------------------------------------------------------

def flow_problems(spec: dict[str, Any], root: Path = ROOT) -> list[str]:
    """Each deployment's entrypoint names a Prefect flow, and its parameters are arguments of it."""
    from prefect import Flow

    problems = []
    for d in spec.get("deployments") or []:
        name = d.get("name")
        path, _, func = str(d.get("entrypoint", "")).partition(":")
        if not (root / path).is_file() or not path.endswith(".py"):
            problems.append(f"{name}: entrypoint file {path!r} does not exist")
            continue
        module = importlib.import_module(path[:-3].replace("/", "."))
        fn = getattr(module, func, None)
        if not isinstance(fn, Flow):
            problems.append(f"{name}: {path}:{func} is not a Prefect flow")
            continue
        signature = inspect.signature(fn.fn)
        for param in d.get("parameters") or {}:
            if param not in signature.parameters:
                problems.append(f"{name}: parameter {param!r} is not an argument of {func}{signature}")
    return problems


_PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def pool_problems(spec: dict[str, Any], template: dict[str, Any]) -> list[str]:
    """The pool's template uses only its own variables, and the deployments set only those."""
    variables = set(template["variables"]["properties"])
    problems = [f"template uses {{{{ {v} }}}}, which is not one of its variables"
                for v in sorted(set(_PLACEHOLDER.findall(json.dumps(template["job_configuration"]))) - variables)]
    for d in spec.get("deployments") or []:
        for var in (d.get("work_pool") or {}).get("job_variables") or {}:
            if var not in variables:
                problems.append(f"{d.get('name')}: job variable {var!r} is not a variable of the pool's template")
    return problems


def _k8s_docs() -> dict[Path, list[dict[str, Any]]]:
    return {p: [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
            for p in sorted(K8S.glob("*.yaml")) if p != K8S_PREFECT_FILE}


def test_k8s_manifests_parse_and_refer_to_each_other():
    docs = [d for ds in _k8s_docs().values() for d in ds]
    assert docs
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    assert {"ServiceAccount", "Role", "RoleBinding", "Deployment", "PersistentVolumeClaim"} <= set(by_kind)
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert len(namespaces) == 1 and None not in namespaces, namespaces
    for binding in by_kind["RoleBinding"].values():
        assert binding["roleRef"]["name"] in by_kind[binding["roleRef"]["kind"]]
        for subject in binding["subjects"]:
            assert subject["name"] in by_kind[subject["kind"]]
    rules = {(g, r): set(rule["verbs"]) for role in by_kind["Role"].values() for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert {"create", "delete", "watch"} <= rules[("batch", "jobs")]
    assert {"get", "list", "watch"} <= rules[("", "pods")] and "get" in rules[("", "pods/log")]

    (worker,) = by_kind["Deployment"].values()
    pod = worker["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] in by_kind["ServiceAccount"]
    assert worker["spec"]["selector"]["matchLabels"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    args = " ".join(container.get("command", []) + container.get("args", []))
    pool = _yaml(K8S_PREFECT_FILE)["deployments"][0]["work_pool"]["name"]
    assert f"--pool {pool}" in args and "--type kubernetes" in args
    image, _, tag = container["image"].partition(":")
    assert image == "prefecthq/prefect" and tag.startswith(_pinned("prefect") + "-") and tag.endswith("-kubernetes")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert urlparse(env["PREFECT_API_URL"]).path == "/api"


def test_k8s_pool_template_mounts_the_claims_where_the_deployments_look():
    template = json.loads(POOL_TEMPLATE.read_text())
    spec = _yaml(K8S_PREFECT_FILE)
    assert pool_problems(spec, template) == []
    claims = {d["metadata"]["name"] for ds in _k8s_docs().values() for d in ds if d["kind"] == "PersistentVolumeClaim"}
    props = template["variables"]["properties"]
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    claim_of_volume = {}
    for v in pod["volumes"]:
        claim = v["persistentVolumeClaim"]["claimName"]
        var = _PLACEHOLDER.fullmatch(claim)
        claim_of_volume[v["name"]] = props[var.group(1)]["default"] if var else claim
    for d in spec["deployments"]:
        jv = d["work_pool"].get("job_variables") or {}
        for var in ("store_claim", "cache_claim", "media_claim"):
            assert jv.get(var, props[var]["default"]) in claims, (d["name"], var)
    assert set(claim_of_volume.values()) <= claims
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments["maintain"]["parameters"]["store"] in mounts
    assert deployments["ingest"]["parameters"]["settings"]["store"] in mounts
    assert set(deployments["ingest"]["parameters"]["sources"]) <= set(mounts)
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] != 0


def test_k8s_deployments_point_at_real_flows():
    spec = _yaml(K8S_PREFECT_FILE)
    assert flow_problems(spec) == []
    ours = {d["name"]: d for d in spec["deployments"]}
    process = {d["name"]: d for d in _yaml(DEPLOY / "prefect.yaml")["deployments"]}
    assert set(ours) == set(process)  # the same deployments as the process pool's file
    for name, d in ours.items():
        assert d["entrypoint"] == process[name]["entrypoint"]
        assert d.get("schedules") == process[name].get("schedules"), name
        assert d["work_pool"]["name"] == "omnivec-k8s"
        assert d["work_pool"]["job_variables"]["image"]
    assert spec["pull"] == _yaml(DEPLOY / "prefect.yaml")["pull"]


def test_k8s_checks_catch_typos():
    spec = _yaml(K8S_PREFECT_FILE)
    template = json.loads(POOL_TEMPLATE.read_text())

    def broken(change) -> dict[str, Any]:
        s = copy.deepcopy(spec)
        change(s["deployments"])
        return s

    assert flow_problems(broken(lambda ds: ds[0].update(entrypoint="flows/ingest.py:ingest_flw")))
    assert flow_problems(broken(lambda ds: ds[0].update(entrypoint="flows/ingst.py:ingest_flow")))
    assert flow_problems(broken(lambda ds: ds[0].update(entrypoint="flows/ingest.py:run_ingest_flow")))  # not a flow
    assert flow_problems(broken(lambda ds: ds[1]["parameters"].update(stor="/data/x")))
    assert pool_problems(broken(lambda ds: ds[0]["work_pool"]["job_variables"].update(memory_requst="1Gi")), template)
    bad_template = copy.deepcopy(template)
    bad_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["volumes"][0][
        "persistentVolumeClaim"]["claimName"] = "{{ store_clam }}"
    assert pool_problems(spec, bad_template)
