"""docker/: what the build context holds, which servers each compose setup runs, how the
PostgreSQL password travels, how the first token is made, and the image's pinned packages.

No Docker engine runs here. The compose files are read the way Compose reads them (files
merged in order, variables interpolated, profiles applied), the Dockerfile's ENV and COPY
lines are read from its text, and the parts rngvault itself does (token files, settings,
PostgreSQL connections) run for real.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import itertools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rngvault._errors import RngVaultError
from tests import _postgres

yaml = pytest.importorskip("yaml", reason="pip install pyyaml")
tomllib = pytest.importorskip("tomllib", reason="Python 3.11 or later reads pyproject.toml")

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
BASE = DOCKER / "compose.yaml"
PASSWORD = "p@ss/w:rd%40 $x#?"  # every character a URL gives a meaning to, and a space


# -- Compose, as far as these files use it --------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?)([-?])([^}]*))?\}|(\w+))")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``/``${VAR-default}`` and
    ``${VAR:?error}``/``${VAR?error}``; a missing required variable raises ValueError."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name = match[1] or match[5]
        value = env.get(name)
        unset = value is None or (match[2] == ":" and value == "")
        if match[3] == "-" and unset:
            return match[4]
        if match[3] == "?" and unset:
            raise ValueError(f"required variable {name} is missing a value: {match[4]}")
        return value or ""

    return _VARIABLE.sub(one, text)


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(value, env) for value in node]
    return node


def _merged(base: Any, override: Any) -> Any:
    """A later file over an earlier one: mappings merge key by key, sequences (ports, volumes)
    add the entries they lack, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merged(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(override, list):
        return base + [item for item in override if item not in base]
    return override


def compose(files: list[Path], env: Mapping[str, str]) -> dict[str, Any]:
    """The configuration ``docker compose -f ... -f ...`` builds with ``env`` in its shell:
    every service is interpolated, whatever profiles are active (Compose does the same)."""
    config: dict[str, Any] = {}
    for path in files:
        config = _merged(config, _interpolated(yaml.safe_load(path.read_text()), env))
    return config


def active(config: dict[str, Any], profiles: set[str]) -> dict[str, dict[str, Any]]:
    """The services ``up`` starts with ``profiles`` enabled."""
    return {
        name: service
        for name, service in config["services"].items()
        if "profiles" not in service or profiles & set(service["profiles"])
    }


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(host address, host port)`` of each port the service publishes (short syntax)."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1]))
        elif len(parts) == 2:
            out.append(("0.0.0.0", parts[0]))
    return out


def setups() -> list[list[Path]]:
    """docker/compose.yaml alone, and with each file that extends it (compose.*.yaml)."""
    return [[BASE]] + [[BASE, extra] for extra in sorted(DOCKER.glob("compose.*.yaml"))]


def runs_rngvault(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("rngvault")


def dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (the image the services run)."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    last_stage = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for line in last_stage.splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
    return env


# -- 1. The build context -------------------------------------------------------------------


def dockerignore(lines: list[str]) -> list[tuple[bool, re.Pattern[str]]]:
    """``(exception, pattern)`` for each line of a .dockerignore, in order (Docker's rules for
    the forms used there: ``*`` within one path element, ``**`` across any number of them)."""
    rules = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip("/"))
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        rules.append((exception, re.compile(regex)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``path`` out of the context: the last pattern that matches the
    path, or one of the folders it is in, decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    out = False
    for exception, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            out = not exception
    return out


def copied_sources() -> list[str]:
    """The context paths the Dockerfile's COPY lines read (COPY --from reads a stage)."""
    sources = []
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_dockerignore_leaves_in_exactly_what_the_dockerfile_copies() -> None:
    """Tracked files and the untracked things a checkout collects (virtual environments,
    caches, build outputs): in the context if and only if a COPY line reads them."""
    done = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    untracked = [
        ".venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so",
        "venv/bin/python",
        "env/pyvenv.cfg",
        ".git/HEAD",
        ".git/objects/pack/pack-1.pack",
        "rngvault/__pycache__/_snapshot.cpython-312.pyc",
        "rngvault/server/storage/__pycache__/sqlite.cpython-311.pyc",
        "tests/__pycache__/conftest.cpython-311-pytest-8.4.2.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/rngvault/cli.data.json",
        ".ruff_cache/0.6.9/1234",
        ".hypothesis/examples/0a1b/2c3d",
        ".schemathesis/report.json",
        "dist/rngvault-0.1.0-py3-none-any.whl",
        "build/gpu-deps/pytest/__init__.py",
        "rngvault.egg-info/PKG-INFO",
        "bench.log",
    ]
    sources = copied_sources()
    assert "rngvault" in sources and "docker/requirements.txt" in sources
    rules = dockerignore((ROOT / ".dockerignore").read_text().splitlines())
    wrong = []
    for path in done.stdout.splitlines() + untracked:
        needed = any(path == s or path.startswith(s + "/") for s in sources)
        needed = needed and "__pycache__" not in path
        if excluded(path, rules) == needed:
            wrong.append(f"{path}: {'left out' if needed else 'sent'}")
    assert not wrong, wrong


def test_the_dockerignore_matcher_follows_dockers_rules() -> None:
    """The matcher above on patterns whose meaning Docker documents."""
    rules = dockerignore(["# a comment", "*", "!src/", "**/x", "", "docs/*.md", "!docs/?.md"])
    assert excluded("README.md", rules) and excluded("docs/guide/a.md", rules)
    assert not excluded("src/a.py", rules) and not excluded("src", rules)
    assert excluded("src/x", rules) and excluded("src/deep/x/y.py", rules)
    assert excluded("docs/ab.md", rules) and not excluded("docs/a.md", rules)


# -- 2. One server per port -----------------------------------------------------------------


def test_each_compose_setup_publishes_each_host_port_once() -> None:
    """For each setup and each set of its profiles: one rngvault server, on 127.0.0.1:8000,
    and no two services on one host port."""
    env = {"RNGVAULT_PG_PASSWORD": PASSWORD}
    for files in setups():
        config = compose(files, env)
        names = {p for s in config["services"].values() for p in s.get("profiles", [])}
        for n in range(len(names) + 1):
            for profiles in map(set, itertools.combinations(sorted(names), n)):
                services = active(config, profiles)
                where = f"{[f.name for f in files]} with profiles {sorted(profiles)}"
                ports = [port for s in services.values() for _, port in published(s)]
                assert len(ports) == len(set(ports)), f"{where}: host ports {ports}"
                servers = [s for s in services.values() if runs_rngvault(s)]
                assert len(servers) == 1, f"{where}: {len(servers)} rngvault servers"
                assert published(servers[0]) == [("127.0.0.1", "8000")], where


def test_plain_up_runs_the_server_on_sqlite_and_the_postgres_file_on_postgresql() -> None:
    image = dockerfile_env()
    sqlite = active(compose([BASE], {}), set())
    assert list(sqlite) == ["rngvault"]
    db = sqlite["rngvault"]["environment"].get("RNGVAULT_DB", image["RNGVAULT_DB"])
    assert db == "sqlite:////data/rngvault.db"
    pg = compose([BASE, DOCKER / "compose.postgres.yaml"], {"RNGVAULT_PG_PASSWORD": PASSWORD})
    server = pg["services"]["rngvault"]
    assert server["environment"]["RNGVAULT_DB"] == "postgresql://rngvault@postgres:5432/rngvault"
    assert server["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_the_s3_profile_adds_a_pinned_seaweedfs_that_the_server_keeps_its_blobs_in() -> None:
    """Plain ``up`` keeps blobs in the database; profile s3 adds SeaweedFS (pinned, its S3
    gateway where the server's AWS_ENDPOINT_URL points, no published port), and the bucket
    and credentials come from the shell to both services, never from the file."""
    from rngvault.server.settings import Settings

    plain = active(compose([BASE], {}), set())
    assert Settings.from_env({**dockerfile_env(), **plain["rngvault"]["environment"]}).blobs is None
    shell = {
        "RNGVAULT_BLOBS": "s3://rngvault/blobs",
        "AWS_ACCESS_KEY_ID": "vault",
        "AWS_SECRET_ACCESS_KEY": "s3cret",
    }
    services = active(compose([BASE], shell), {"s3"})
    assert set(services) == {"rngvault", "seaweedfs"}
    weed, server = services["seaweedfs"], services["rngvault"]["environment"]
    image, _, tag = weed["image"].partition(":")
    assert image == "chrislusf/seaweedfs" and re.fullmatch(r"\d+\.\d+", tag), weed["image"]
    assert weed["command"][0] == "server" and "-s3" in weed["command"] and "ports" not in weed
    port = next(arg.split("=", 1)[1] for arg in weed["command"] if arg.startswith("-s3.port="))
    settings = Settings.from_env({**dockerfile_env(), **server})
    assert settings.blobs == shell["RNGVAULT_BLOBS"]
    assert server["AWS_ENDPOINT_URL"] == f"http://seaweedfs:{port}"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert server[name] == weed["environment"][name] == shell[name]
    assert "s3cret" not in BASE.read_text()


# -- 3. The PostgreSQL password -------------------------------------------------------------


def test_the_postgres_password_is_required_and_never_part_of_a_url() -> None:
    texts = {path.name: path.read_text() for path in DOCKER.glob("compose*.yaml")}
    uses = [
        (name, match[0])
        for name, text in texts.items()
        for match in re.finditer(r"\$\{?RNGVAULT_PG_PASSWORD[^}\s]*", text)
    ]
    assert uses, "no compose file uses RNGVAULT_PG_PASSWORD"
    for name, use in uses:
        assert use.startswith("${RNGVAULT_PG_PASSWORD:?"), f"{name}: {use} has a default"
    compose([BASE], {})  # raises if plain `up` needed a variable that is not set
    for files in setups()[1:]:
        with pytest.raises(ValueError, match="RNGVAULT_PG_PASSWORD"):
            compose(files, {})
        for name, service in compose(files, {"RNGVAULT_PG_PASSWORD": PASSWORD})["services"].items():
            db = service.get("environment", {}).get("RNGVAULT_DB", "")
            assert PASSWORD not in db and urlsplit(db).password is None, f"{name}: {db}"


def test_a_password_with_url_characters_reaches_postgresql_as_pgpassword(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's environment from the PostgreSQL setup, pointed at a real PostgreSQL that
    requires that password: the store opens with it, and is refused without it."""
    reason = _postgres.unavailable()
    if reason is not None:
        if os.environ.get("RNGVAULT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"RNGVAULT_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    import psycopg

    from rngvault.server.storage import open_store

    config = compose([BASE, DOCKER / "compose.postgres.yaml"], {"RNGVAULT_PG_PASSWORD": PASSWORD})
    server = config["services"]["rngvault"]["environment"]
    database = config["services"]["postgres"]["environment"]
    assert server["PGPASSWORD"] == database["POSTGRES_PASSWORD"] == PASSWORD
    postgres = _postgres.PostgresServer().start()
    try:
        # Passwords checked on TCP for every role but the superuser the fixture needs.
        hba = postgres.root / "data" / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        with psycopg.connect(postgres.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            user, name = database["POSTGRES_USER"], database["POSTGRES_DB"]
            conn.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{PASSWORD}'")
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{user}"')
        url = server["RNGVAULT_DB"].replace("@postgres:5432/", f"@127.0.0.1:{postgres.port}/")

        async def open_and_count() -> int:
            store = await open_store(url)
            try:
                return len((await store.list_runs()).items)
            finally:
                await store.close()

        monkeypatch.delenv("PGPASSWORD", raising=False)
        with pytest.raises(RngVaultError, match="password"):
            asyncio.run(open_and_count())
        monkeypatch.setenv("PGPASSWORD", server["PGPASSWORD"])
        assert asyncio.run(open_and_count()) == 0
    finally:
        postgres.stop()


# -- 4. From open to tokens -----------------------------------------------------------------


def test_the_documented_compose_run_turns_tokens_on_for_the_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/server.md's ``docker compose ... run --rm`` command, run with the environment the
    container gets (the image's ENV, then the service's), /data being the volume."""
    from rngvault.server.auth import authenticator_for
    from rngvault.server.settings import Settings

    docs = (ROOT / "docs/server.md").read_text()
    section = docs[docs.index("## Docker\n") :]
    section = section[: section.index("\n## ", 1)]
    commands = [
        shlex.split(line[2:])
        for line in section.splitlines()
        if line.startswith("$ ") and " run --rm " in line and " token create " in line
    ]
    assert commands, "docs/server.md's Docker section shows no `docker compose run --rm`"
    command = commands[0]
    files = [ROOT / command[i + 1] for i, word in enumerate(command) if word == "-f"]
    assert files == [BASE], command
    service_name = command[command.index("--rm") + 1]
    service = compose(files, {})["services"][service_name]
    args = command[command.index("--rm") + 2 :]
    assert args[:2] == ["token", "create"], command
    assert "/data" in [volume.split(":")[1] for volume in service["volumes"]]

    def container_env(**shell: str) -> dict[str, str]:
        service = compose(files, shell)["services"][service_name]
        merged = {**dockerfile_env(), **service.get("environment", {})}
        return {k: v.replace("/data", str(tmp_path)) for k, v in merged.items()}

    for key in [k for k in os.environ if k.startswith("RNGVAULT_")]:
        monkeypatch.delenv(key)
    for key, value in container_env().items():
        monkeypatch.setenv(key, value)
    assert authenticator_for(Settings.from_env()).open  # first start: open, loopback-only port

    done = subprocess.run(
        [sys.executable, "-m", "rngvault", *args],
        env={**os.environ, **container_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    settings = Settings.from_env()
    assert settings.tokens == tmp_path / "tokens.json" and settings.tokens.is_file()
    assert not authenticator_for(settings).open  # the running server now requires tokens

    for key, value in container_env(RNGVAULT_INSECURE_OPEN="false").items():
        monkeypatch.setenv(key, value)
    assert not authenticator_for(Settings.from_env()).open
    settings.tokens.unlink()  # a lost tokens file then stops the server, never opens it
    with pytest.raises(RngVaultError, match="without tokens"):
        authenticator_for(Settings.from_env())


# -- 5. Pinned packages ---------------------------------------------------------------------

LINUX_312 = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file in which every line is ``name==version``."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)", line)
        assert match, f"{path.name}: {line!r} is not pinned as name==version"
        name = canonicalize_name(match[1])
        assert name not in out, f"{path.name}: {name} twice"
        out[name] = match[2]
    return out


def needed(requirements: list[str]) -> Iterator[tuple[str, Requirement]]:
    """Each requirement that applies on Linux/3.12, and what the extras it asks for require
    (read from the installed distribution's metadata), as ``(why, requirement)``."""
    for text in requirements:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({**LINUX_312, "extra": ""}):
            continue
        yield text, req
        if not req.extras:
            continue
        try:
            declared = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"cannot read the requirements of {text}: pip install '{text}'")
        for extra in req.extras:
            for dep in map(Requirement, declared):
                env = {**LINUX_312, "extra": extra}
                if dep.marker and "extra" in str(dep.marker) and dep.marker.evaluate(env):
                    yield f"{text} -> {dep}", dep


def test_the_image_installs_only_pinned_packages_that_cover_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    runtime = [*project["dependencies"], "uvicorn[standard]"]  # the image serves with uvloop
    for extra in ("server", "postgres", "s3"):
        runtime += project["optional-dependencies"][extra]
    for path, requirements in [
        (DOCKER / "requirements.txt", runtime),
        (DOCKER / "build-requirements.txt", pyproject["build-system"]["requires"]),
    ]:
        pinned = pins(path)
        for why, req in needed(requirements):
            name = canonicalize_name(req.name)
            assert name in pinned, f"{path.name} lacks {why}"
            assert req.specifier.contains(pinned[name], prereleases=True), (
                f"{path.name}: {name}=={pinned[name]} does not satisfy {why}"
            )
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "pip install -r docker/build-requirements.txt" in dockerfile
    assert "pip wheel --no-deps --no-build-isolation" in dockerfile
    assert "pip install --no-deps -r /tmp/requirements.txt" in dockerfile
    assert "pip install --no-deps /wheels/*.whl" in dockerfile and "pip check" in dockerfile
    assert not re.search(r"pip install (?!--no-deps|-r )", dockerfile)  # nothing unpinned
