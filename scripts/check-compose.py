#!/usr/bin/env python3
"""Checks what the compose-spec schema cannot: that docker-compose.yml only
names things that exist and follows the project's rules.

    check-compose.py [docker-compose.yml]     check the file; exit 1 on any problem
    check-compose.py --self-test              break copies of the file on purpose and
                                              check that each break is reported

Checked: build contexts, Dockerfiles, their build targets and COPY sources;
env files (the .env itself is never committed: its .env.example must exist);
bind-mounted paths, init scripts (bash -n) and the sql/ files they load;
healthchecks (CMD-SHELL with one command string; database services use
pg_isready -U postgres); depends_on with conditions on existing services;
no secret written into the file. Needs ruamel.yaml (installed with
check-jsonschema in the venv of make test-compose).
"""
import copy
import io
import os
import re
import subprocess
import sys
import tempfile

from ruamel.yaml import YAML

SECRET_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY)", re.I)
URL_WITH_PASSWORD = re.compile(r"\w+://[^:/@\s]+:[^@\s$]+@")


def dockerfile_stages_and_copies(path):
    stages, copies = [], []
    text = open(path).read().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.strip().split()
        if not words:
            continue
        op = words[0].upper()
        if op == "FROM":
            lower = [w.lower() for w in words]
            if "as" in lower:
                stages.append(words[lower.index("as") + 1])
        elif op in ("COPY", "ADD"):
            args = [w for w in words[1:] if not w.startswith("--")]
            if any(w.startswith("--from") for w in words[1:]):
                continue
            copies.extend(args[:-1])
    return stages, copies


def check(doc, root):
    errors = []
    err = errors.append
    services = doc.get("services") or {}
    if not services:
        err("no services")
    for name, svc in services.items():
        where = f"services.{name}"
        # Build: context, Dockerfile, target stage, COPY sources.
        build = svc.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            ctx = os.path.join(root, build.get("context", "."))
            if not os.path.isdir(ctx):
                err(f"{where}.build.context {build.get('context')} is not a directory")
                continue
            dockerfile = os.path.join(ctx, build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(dockerfile):
                err(f"{where}.build.dockerfile {build.get('dockerfile')} does not exist")
            else:
                stages, copies = dockerfile_stages_and_copies(dockerfile)
                target = build.get("target")
                if target and target not in stages:
                    err(f"{where}.build.target {target} is not a stage of {build.get('dockerfile')} ({', '.join(stages)})")
                for src in copies:
                    if not os.path.exists(os.path.join(ctx, src)):
                        err(f"{where}: {build.get('dockerfile')} copies {src}, which does not exist in the context")
        elif not svc.get("image"):
            err(f"{where} has neither build nor image")
        # Env files: the .env.example beside each must exist (the .env is git-ignored).
        env_files = svc.get("env_file") or []
        if isinstance(env_files, str):
            env_files = [env_files]
        for ef in env_files:
            path = ef if isinstance(ef, str) else ef.get("path")
            full = os.path.join(root, path)
            example = full + ".example" if not full.endswith(".example") else full
            if not os.path.isfile(example):
                err(f"{where}.env_file {path}: neither it nor {path}.example exists" if not os.path.isfile(full)
                    else f"{where}.env_file {path}: {path}.example is missing (the .env is never committed)")
        # Inline environment: no secrets.
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            items = list(env.items())
        else:
            items = [tuple((e.split("=", 1) + [""])[:2]) for e in env]
        for key, value in items:
            if SECRET_KEY.search(str(key)) and value not in (None, "") and not str(value).startswith("${"):
                err(f"{where}.environment.{key} holds a secret: put it in an env_file")
            if URL_WITH_PASSWORD.search(str(value or "")):
                err(f"{where}.environment.{key} holds a URL with a password: put it in an env_file")
        # Bind mounts and init scripts.
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else (vol.get("source") if vol.get("type") == "bind" else None)
            if not src or not (src.startswith(".") or src.startswith("/")):
                continue
            full = os.path.join(root, src)
            if not os.path.exists(full):
                err(f"{where}.volumes: {src} does not exist")
                continue
            target = vol.split(":")[1] if isinstance(vol, str) else vol.get("target", "")
            if target.startswith("/docker-entrypoint-initdb.d"):
                scripts = sorted(f for f in os.listdir(full) if re.search(r"\.(sh|sql|sql\.gz)$", f))
                if not scripts:
                    err(f"{where}: init directory {src} holds no .sh or .sql script")
                for s in scripts:
                    p = os.path.join(full, s)
                    if s.endswith(".sh"):
                        r = subprocess.run(["bash", "-n", p], capture_output=True, text=True)
                        if r.returncode != 0:
                            err(f"{where}: init script {src}/{s} does not parse: {r.stderr.strip()}")
                    for sql in re.findall(r"/metricagg/sql/([\w.-]+\.sql)", open(p).read()):
                        if not os.path.isfile(os.path.join(root, "sql", sql)):
                            err(f"{where}: init script {src}/{s} loads sql/{sql}, which does not exist")
        # Healthchecks: CMD-SHELL with exactly one command string (a list form
        # like ["CMD-SHELL", "PGUSER=postgres", "pg_isready"] always passes).
        hc = svc.get("healthcheck")
        is_db = name.endswith("-db")
        if hc is None:
            if is_db:
                err(f"{where} is a database without a healthcheck")
        elif not hc.get("disable"):
            test = hc.get("test")
            if isinstance(test, str):
                test = ["CMD-SHELL", test]
            if not test or test[0] not in ("CMD", "CMD-SHELL"):
                err(f"{where}.healthcheck.test must start with CMD or CMD-SHELL")
            elif test[0] == "CMD-SHELL" and len(test) != 2:
                err(f"{where}.healthcheck.test: CMD-SHELL takes one command string, got {len(test) - 1} "
                    "(Docker runs only the first through the shell)")
            elif is_db and not re.match(r"pg_isready -U postgres\b", test[1] if test[0] == "CMD-SHELL" else " ".join(test[1:])):
                err(f"{where}.healthcheck.test must be pg_isready -U postgres …")
        # depends_on: long form with a condition, on services that exist.
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            err(f"{where}.depends_on must use conditions (long form), not a list")
            deps = {}
        for dep, spec in deps.items():
            if dep not in services:
                err(f"{where}.depends_on names unknown service {dep}")
                continue
            cond = (spec or {}).get("condition")
            if not cond:
                err(f"{where}.depends_on.{dep} has no condition")
            elif cond == "service_healthy" and not services[dep].get("healthcheck"):
                err(f"{where}.depends_on.{dep}: service_healthy but {dep} has no healthcheck")
    # No secret anywhere in the file.
    buf = io.StringIO()
    YAML().dump(doc, buf)
    for m in URL_WITH_PASSWORD.finditer(buf.getvalue()):
        err(f"a URL with a password is written in the file: {m.group(0)}")
    for need in ("raw-db", "analytics-db", "seeder", "insights-api"):
        if need not in services:
            err(f"service {need} is missing")
    return errors


def load(path):
    with open(path) as f:
        return YAML(typ="safe").load(f)


def self_test(path):
    root = os.path.dirname(os.path.abspath(path))
    base = load(path)
    assert check(base, root) == [], "the real file must pass before the self-test"

    def broken(mutate):
        doc = copy.deepcopy(base)
        mutate(doc)
        return check(doc, root)

    cases = {
        "list-form healthcheck": lambda d: d["services"]["raw-db"].__setitem__(
            "healthcheck", {"test": ["CMD-SHELL", "PGUSER=postgres", "pg_isready"]}),
        "missing env file": lambda d: d["services"]["seeder"].__setitem__("env_file", "docker/nope/.env"),
        "missing Dockerfile": lambda d: d["services"]["raw-db"]["build"].__setitem__("dockerfile", "docker/nope.Dockerfile"),
        "unknown build target": lambda d: d["services"]["raw-db"]["build"].__setitem__("target", "nope"),
        "missing init dir": lambda d: d["services"]["analytics-db"].__setitem__(
            "volumes", ["./docker/nope:/docker-entrypoint-initdb.d:ro"]),
        "depends_on without condition": lambda d: d["services"]["seeder"].__setitem__("depends_on", ["raw-db"]),
        "depends_on unknown service": lambda d: d["services"]["seeder"].__setitem__(
            "depends_on", {"nope": {"condition": "service_started"}}),
        "secret in environment": lambda d: d["services"]["insights-api"].__setitem__(
            "environment", {"OPENAI_API_KEY": "sk-123"}),
        "URL with password": lambda d: d["services"]["seeder"].__setitem__(
            "environment", {"INGEST_DATABASE_URL": "postgres://u:pw@raw-db/metrics_raw"}),
        "database without healthcheck": lambda d: d["services"]["analytics-db"].pop("healthcheck"),
        "service missing": lambda d: d["services"].pop("insights-api"),
    }
    failed = 0
    for label, mutate in cases.items():
        errs = broken(mutate)
        print(f"self-test: {label}: {'reported: ' + errs[0] if errs else 'NOT REPORTED'}")
        failed += not errs
    # A Dockerfile COPY of a missing path, in a scratch copy of the context.
    with tempfile.TemporaryDirectory() as tmp:
        df = os.path.join(tmp, "Dockerfile")
        open(df, "w").write("FROM scratch AS x\nCOPY nope /nope\n")
        doc = copy.deepcopy(base)
        doc["services"]["seeder"]["build"] = {"context": tmp, "dockerfile": "Dockerfile"}
        errs = check(doc, root)
        print(f"self-test: COPY of a missing path: {'reported: ' + errs[0] if errs else 'NOT REPORTED'}")
        failed += not errs
    return 1 if failed else 0


def main():
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        return self_test(args[1] if len(args) > 1 else "docker-compose.yml")
    path = args[0] if args else "docker-compose.yml"
    errors = check(load(path), os.path.dirname(os.path.abspath(path)))
    for e in errors:
        print(f"{path}: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"{path}: every path, env file, init script and rule checks out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
