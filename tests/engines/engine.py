"""Fetch, cache, start and stop real single-node OpenSearch / Elasticsearch.

Everything is downloaded from Maven Central through ``mvn`` (no docker, no
vendor download sites) and assembled into a runnable distribution under the
engine cache (``$FLOW_INGEST_ENGINE_CACHE`` or ``~/.cache/flow-ingest/engines``).
See ``docs/engines.md`` for the routes, what runs and what does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

KINDS = ("opensearch", "elasticsearch")

DEFAULT_VERSIONS = {
    "opensearch": "2.19.6",
    "elasticsearch": "8.19.21",
}

DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT = 240.0
DEFAULT_STOP_TIMEOUT = 60.0

# Java homes tried (in order) when an engine needs a newer Java than the default.
JAVA21_CANDIDATES = (
    "/usr/lib/jvm/temurin-25-jdk-amd64",
    "/usr/lib/jvm/temurin-21-jdk-amd64",
    "/usr/lib/jvm/java-25-openjdk-amd64",
    "/usr/lib/jvm/java-21-openjdk-amd64",
)


class EngineError(RuntimeError):
    """Fetching, assembling, starting or stopping an engine failed."""


# --------------------------------------------------------------------------
# paths / small helpers
# --------------------------------------------------------------------------


def cache_root() -> Path:
    env = os.environ.get("FLOW_INGEST_ENGINE_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "flow-ingest" / "engines"
    return root


def default_version(kind: str) -> str:
    _check_kind(kind)
    return os.environ.get(f"FLOW_INGEST_{kind.upper()}_VERSION") or DEFAULT_VERSIONS[kind]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise EngineError(f"unknown engine kind {kind!r}; expected one of {', '.join(KINDS)}")


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _needs_java21(kind: str, version: str) -> bool:
    # OpenSearch 3.x and Elasticsearch 9.x require Java 21+.
    return (kind == "opensearch" and _major(version) >= 3) or (
        kind == "elasticsearch" and _major(version) >= 9
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dir_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


@contextlib.contextmanager
def _file_lock(name: str):
    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _java_major(java_home: Path) -> int:
    release = java_home / "release"
    if release.is_file():
        m = re.search(r'JAVA_VERSION="(\d+)', release.read_text(errors="replace"))
        if m:
            return int(m.group(1))
    out = subprocess.run(
        [str(java_home / "bin" / "java"), "-version"], capture_output=True, text=True
    ).stderr
    m = re.search(r'version "(\d+)', out)
    return int(m.group(1)) if m else 0


def _java_range(kind: str, version: str) -> tuple[int, int]:
    """(min, max) Java feature release able to run the engine."""
    if _needs_java21(kind, version):
        return 21, 99
    if kind == "opensearch":
        # OpenSearch 2.x relies on the Java Security Manager, which Java 24 removed.
        return 17, 23
    return 17, 99


def find_java_home(kind: str, version: str, java_home: str | os.PathLike | None = None) -> Path:
    """Pick a JDK able to run the engine.

    Order: explicit argument, ``FLOW_INGEST_JAVA_HOME``, then (for engines that
    need Java 21+) ``FLOW_INGEST_JAVA21_HOME`` and known JDK locations, else
    ``JAVA_HOME`` / the ``java`` on PATH; the first JDK in the engine's
    supported range wins.
    """
    lo, hi = _java_range(kind, version)
    candidates: list[str] = []
    if java_home:
        candidates.append(str(java_home))
    if os.environ.get("FLOW_INGEST_JAVA_HOME"):
        candidates.append(os.environ["FLOW_INGEST_JAVA_HOME"])
    if lo >= 21:
        if os.environ.get("FLOW_INGEST_JAVA21_HOME"):
            candidates.append(os.environ["FLOW_INGEST_JAVA21_HOME"])
        candidates.extend(JAVA21_CANDIDATES)
    if os.environ.get("JAVA_HOME"):
        candidates.append(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    if java:
        candidates.append(str(Path(java).resolve().parent.parent))
    candidates.extend(str(p) for p in sorted(Path("/usr/lib/jvm").glob("*")) if p.is_dir())
    tried = []
    seen = set()
    for cand in candidates:
        home = Path(cand)
        if home in seen or not (home / "bin" / "java").exists():
            continue
        seen.add(home)
        major = _java_major(home)
        tried.append(f"{home} (Java {major})")
        if lo <= major <= hi:
            return home
    raise EngineError(
        f"{kind} {version} needs Java {lo}..{hi if hi < 99 else ''}; none found "
        f"(tried: {', '.join(tried) or 'nothing'}). Set FLOW_INGEST_JAVA_HOME."
    )


# --------------------------------------------------------------------------
# distribution recipes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleSpec:
    """An OpenSearch module shipped as a plain jar on Maven Central.

    The jars carry neither ``plugin-descriptor.properties`` nor their
    dependencies; we resolve the dependencies with Maven and write the
    descriptor (and the security policy the module needs) ourselves.
    """

    name: str  # folder / plugin name inside modules/
    artifact: str  # org.opensearch.plugin:<artifact>:<version>
    package: str  # java package holding the plugin class
    description: str
    extended: tuple[str, ...] = ()
    policy: str = ""


_POLICY_PAINLESS = """grant {
  // painless compiles scripts into classes loaded by its own class loader
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
"""

_POLICY_REINDEX = """grant {
  // reindex-from-remote opens sockets through the low level REST client
  permission java.net.SocketPermission "*", "connect";
};

grant codeBase "${codebase.opensearch-rest-client}" {
  permission java.net.NetPermission "getProxySelector";
};

grant codeBase "${codebase.httpasyncclient}" {
  permission java.net.NetPermission "getProxySelector";
};
"""

_POLICY_MUSTACHE = """grant {
  // mustache.java reflects over the template context
  permission java.lang.RuntimePermission "accessDeclaredMembers";
};
"""

OPENSEARCH_MODULES: tuple[ModuleSpec, ...] = (
    ModuleSpec(
        "lang-painless",
        "lang-painless",
        "org.opensearch.painless",
        "An easy, safe and fast scripting language for OpenSearch",
        policy=_POLICY_PAINLESS,
    ),
    ModuleSpec(
        "ingest-common",
        "ingest-common",
        "org.opensearch.ingest.common",
        "Module for ingest processors that do not require additional security permissions or have large dependencies and resources",
        extended=("lang-painless",),
    ),
    ModuleSpec(
        "analysis-common",
        "analysis-common",
        "org.opensearch.analysis.common",
        "Adds \"built in\" analyzers to OpenSearch.",
        extended=("lang-painless",),
    ),
    ModuleSpec(
        "mapper-extras",
        "mapper-extras-client",
        "org.opensearch.index.mapper",
        "Adds advanced field mappers (scaled_float, rank_feature, search_as_you_type, ...)",
    ),
    ModuleSpec(
        "reindex",
        "reindex-client",
        "org.opensearch.index.reindex",
        "The Reindex module adds APIs to reindex from one index to another or update documents in place.",
        policy=_POLICY_REINDEX,
    ),
    ModuleSpec(
        "lang-mustache",
        "lang-mustache-client",
        "org.opensearch.script.mustache",
        "Mustache scripting integration for OpenSearch",
        policy=_POLICY_MUSTACHE,
    ),
)


def _dist_coordinate(kind: str, version: str) -> tuple[str, str, str, str]:
    if kind == "opensearch":
        return ("org.opensearch.distribution.integ-test-zip", "opensearch", version, "zip")
    return ("org.elasticsearch.distribution.integ-test-zip", "elasticsearch", version, "zip")


def _extra_plugin_zips(kind: str) -> list[Path]:
    """Locally supplied plugin zips (e.g. an ISM zip obtained elsewhere).

    ``FLOW_INGEST_OPENSEARCH_PLUGIN_ZIPS`` / ``FLOW_INGEST_ELASTICSEARCH_PLUGIN_ZIPS``:
    os.pathsep separated list of local zip files.
    """
    raw = os.environ.get(f"FLOW_INGEST_{kind.upper()}_PLUGIN_ZIPS", "")
    zips = [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    for z in zips:
        if not z.is_file():
            raise EngineError(f"FLOW_INGEST_{kind.upper()}_PLUGIN_ZIPS: {z} does not exist")
    return zips


def _dist_key(kind: str, version: str) -> str:
    key = f"{kind}-{version}"
    zips = _extra_plugin_zips(kind)
    if zips:
        h = hashlib.sha1()
        for z in zips:
            h.update(str(z).encode())
            h.update(str(z.stat().st_size).encode())
        key += "-plugins-" + h.hexdigest()[:10]
    return key


def dist_dir(kind: str, version: str | None = None) -> Path:
    version = version or default_version(kind)
    return cache_root() / "dist" / _dist_key(kind, version)


# --------------------------------------------------------------------------
# maven
# --------------------------------------------------------------------------

_DEP_PLUGIN = """
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.6.1</version>
      </plugin>
    </plugins>
  </build>"""


# Module poms drag in the whole server (org.opensearch:opensearch + Lucene, ~35 MB)
# through opensearch-scripting-painless-spi / opensearch-ssl-config; the
# distribution already has those in lib/, so do not download them at all.
_EXCLUDED = (("org.opensearch", "opensearch"), ("org.opensearch", "opensearch-common"))


def _pom(artifact_id: str, deps: Iterable[tuple[str, str, str, str]], modules: Iterable[str] = (),
         exclusions: Iterable[tuple[str, str]] = ()) -> str:
    excl = "".join(
        f"<exclusion><groupId>{g}</groupId><artifactId>{a}</artifactId></exclusion>" for g, a in exclusions
    )
    excl_xml = f"\n      <exclusions>{excl}</exclusions>" if excl else ""
    dep_xml = "".join(
        f"""
    <dependency>
      <groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version><type>{t}</type>{excl_xml}
    </dependency>"""
        for g, a, v, t in deps
    )
    mod_xml = "".join(f"\n    <module>{m}</module>" for m in modules)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>flow-ingest.engines</groupId>
  <artifactId>{artifact_id}</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <modules>{mod_xml}
  </modules>
  <dependencies>{dep_xml}
  </dependencies>{_DEP_PLUGIN}
</project>
"""


def _mvn_copy_dependencies(project: Path, log) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise EngineError("mvn not found on PATH (Maven is needed to fetch engines)")
    m2 = cache_root() / "m2"
    m2.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        f"-Dmaven.repo.local={m2}",
        "-f",
        str(project / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
    ]
    log(f"$ {' '.join(cmd)}")
    env = dict(os.environ)
    # mvn itself runs fine on the default Java 17.
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()
        raise EngineError(
            f"maven failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(out[-40:])
        )


# --------------------------------------------------------------------------
# fetch + assemble
# --------------------------------------------------------------------------


def _unzip_with_modes(zpath: Path, dest: Path) -> None:
    with zipfile.ZipFile(zpath) as zf:
        for info in zf.infolist():
            target = zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(target, mode)


def _strip_version(jar_name: str) -> str:
    """``netty-codec-4.1.135.Final.jar`` -> ``netty-codec``."""
    base = jar_name[:-4] if jar_name.endswith(".jar") else jar_name
    m = re.match(r"^(.*?)-\d[\w.\-]*$", base)
    return m.group(1) if m else base


def _plugin_class(jar: Path, package: str) -> str:
    prefix = package.replace(".", "/") + "/"
    with zipfile.ZipFile(jar) as zf:
        names = [
            n
            for n in zf.namelist()
            if n.startswith(prefix)
            and n.endswith("Plugin.class")
            and "/" not in n[len(prefix):]
            and "$" not in n
        ]
    if not names:
        raise EngineError(f"no *Plugin class in package {package} of {jar.name}")
    # 3.x renamed e.g. PainlessPlugin -> PainlessModulePlugin; prefer the module class.
    names.sort(key=lambda n: (not n.endswith("ModulePlugin.class"), len(n)))
    return names[0][: -len(".class")].replace("/", ".")


def _write_descriptor(path: Path, *, name: str, description: str, version: str, classname: str,
                      java_version: str, extended: Iterable[str]) -> None:
    path.write_text(
        "\n".join(
            [
                "# written by tests/engines (module jar from Maven Central has no descriptor)",
                f"description={description}",
                f"version={version}",
                f"name={name}",
                f"classname={classname}",
                f"java.version={java_version}",
                f"opensearch.version={version}",
                "custom.foldername=",
                f"extended.plugins={','.join(extended)}",
                "has.native.controller=false",
                "",
            ]
        )
    )


def _read_props(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            props[k.strip()] = v.strip()
    return props


def fetch(kind: str, version: str | None = None, *, force: bool = False, log=None) -> Path:
    """Download (through Maven) and assemble the engine; return its home dir.

    Idempotent and safe to call concurrently (file lock); a cached, complete
    distribution is returned immediately.
    """
    _check_kind(kind)
    version = version or default_version(kind)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    home = dist_dir(kind, version)
    marker = home / ".flow-ingest-ready.json"
    if marker.is_file() and not force:
        return home
    with _file_lock(f"{kind}-{version}"):
        if marker.is_file() and not force:
            return home
        t0 = time.monotonic()
        m2 = cache_root() / "m2"
        m2_before = _dir_size(m2) if m2.exists() else 0
        build = cache_root() / "build"
        build.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{kind}-{version}-", dir=build))
        try:
            manifest = _assemble(kind, version, work, log)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        staged = Path(manifest.pop("_staged"))
        m2_after = _dir_size(m2)
        # The distribution zip (55-110 MB) is unpacked now: drop it from the local
        # Maven repo to halve the cache. (`fetch --force` downloads it again.)
        g, a, v, _ = _dist_coordinate(kind, version)
        shutil.rmtree(m2.joinpath(*g.split("."), a, v), ignore_errors=True)
        manifest.update(
            kind=kind,
            version=version,
            maven_download_bytes=m2_after - m2_before,
            maven_repo_bytes=_dir_size(m2),
            dist_bytes=_dir_size(staged),
            fetch_seconds=round(time.monotonic() - t0, 1),
            fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (staged / ".flow-ingest-ready.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if home.exists():
            shutil.rmtree(home)
        home.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(home)
        log(
            f"{kind} {version} ready in {home} "
            f"(downloaded {_human(manifest['maven_download_bytes'])}, "
            f"assembled {_human(manifest['dist_bytes'])}, {manifest['fetch_seconds']} s)"
        )
        return home


def _assemble(kind: str, version: str, work: Path, log) -> dict:
    modules = OPENSEARCH_MODULES if kind == "opensearch" else ()
    for spec in modules:
        sub = work / f"m-{spec.name}"
        sub.mkdir()
        (sub / "pom.xml").write_text(
            _pom(f"m-{spec.name}", [("org.opensearch.plugin", spec.artifact, version, "jar")],
                 exclusions=_EXCLUDED)
        )
    extra_zips = _extra_plugin_zips(kind)
    deps = [_dist_coordinate(kind, version)]
    if kind == "opensearch" and extra_zips and not any(
        z.name.startswith("opensearch-job-scheduler") for z in extra_zips
    ):
        # ISM & co. extend the job scheduler, which *is* on Maven Central.
        deps.append(("org.opensearch.plugin", "opensearch-job-scheduler", f"{version}.0", "zip"))
    (work / "pom.xml").write_text(_pom("root", deps, [f"m-{s.name}" for s in modules]))
    log(f"fetching {kind} {version} from Maven Central ...")
    _mvn_copy_dependencies(work, log)

    dep_dir = work / "target" / "dependency"
    dist_zip = dep_dir / f"{_dist_coordinate(kind, version)[1]}-{version}.zip"
    if not dist_zip.is_file():
        raise EngineError(f"maven did not produce {dist_zip}")
    unpack = cache_root() / "dist" / f".staging-{kind}-{version}-{uuid.uuid4().hex[:8]}"
    unpack.mkdir(parents=True)
    _unzip_with_modes(dist_zip, unpack)
    tops = [p for p in unpack.iterdir()]
    if len(tops) != 1 or not tops[0].is_dir():
        raise EngineError(f"unexpected layout in {dist_zip.name}: {[p.name for p in tops]}")
    staged = tops[0]
    # flatten: <staging>/<dist-dir>/... -> <staging>.d
    final_staged = unpack.with_name(unpack.name + ".d")
    staged.rename(final_staged)
    unpack.rmdir()
    staged = final_staged
    try:
        return _install_modules(kind, version, work, staged, modules, extra_zips, dep_dir, log)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _install_modules(kind, version, work, staged, modules, extra_zips, dep_dir, log) -> dict:
    for b in (staged / "bin").iterdir():
        b.chmod(b.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    lib_names = {_strip_version(p.name) for p in (staged / "lib").glob("*.jar")}
    java_version = "11"
    netty_desc = staged / "modules" / "transport-netty4" / "plugin-descriptor.properties"
    if netty_desc.is_file():
        java_version = _read_props(netty_desc).get("java.version", java_version)

    added = []
    for spec in modules:
        jars = sorted((work / f"m-{spec.name}" / "target" / "dependency").glob("*.jar"))
        parent_names = set(lib_names)
        for ext in spec.extended:
            parent_names |= {_strip_version(p.name) for p in (staged / "modules" / ext).glob("*.jar")}
        mdir = staged / "modules" / spec.name
        mdir.mkdir(parents=True, exist_ok=False)
        main_jar = None
        for jar in jars:
            if _strip_version(jar.name) in parent_names:
                continue  # already on the server / parent class path: would be jar hell
            shutil.copy2(jar, mdir / jar.name)
            if jar.name == f"{spec.artifact}-{version}.jar":
                main_jar = mdir / jar.name
        if main_jar is None:
            raise EngineError(f"module jar {spec.artifact}-{version}.jar missing after maven")
        classname = _plugin_class(main_jar, spec.package)
        _write_descriptor(
            mdir / "plugin-descriptor.properties",
            name=spec.name,
            description=spec.description,
            version=version,
            classname=classname,
            java_version=java_version,
            extended=spec.extended,
        )
        if spec.policy:
            (mdir / "plugin-security.policy").write_text(spec.policy)
        added.append({"name": spec.name, "classname": classname, "jars": sorted(p.name for p in mdir.glob("*.jar"))})

    installed_plugins = []
    if extra_zips:
        java_home = find_java_home(kind, version)
        zips = sorted(dep_dir.glob("opensearch-job-scheduler-*.zip")) + extra_zips
        tool = staged / "bin" / ("opensearch-plugin" if kind == "opensearch" else "elasticsearch-plugin")
        for z in zips:
            cmd = [str(tool), "install", "--batch", z.as_uri()]
            log(f"$ {' '.join(cmd)}")
            env = dict(os.environ, JAVA_HOME=str(java_home), OPENSEARCH_JAVA_HOME=str(java_home),
                       ES_JAVA_HOME=str(java_home))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise EngineError(f"plugin install failed: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
            installed_plugins.append(z.name)

    return {
        "_staged": str(staged),
        "distribution": ":".join(_dist_coordinate(kind, version)),
        "added_modules": added,
        "installed_plugins": installed_plugins,
        "modules": sorted(p.name for p in (staged / "modules").iterdir()),
    }


def cached_distributions() -> list[dict]:
    out = []
    root = cache_root() / "dist"
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        marker = d / ".flow-ingest-ready.json"
        if marker.is_file():
            info = json.loads(marker.read_text())
            info["home"] = str(d)
            out.append(info)
    return out


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # the group may only hold zombies; check for a live member
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


_ROOT_WRAPPER: list[str] | None = None


def _root_wrapper() -> list[str]:
    """Both engines refuse to run as root ("can not run opensearch as root").

    CI runs as root, so as root we start the engine in a fresh user namespace
    (``unshare --user --map-user=1000 --map-group=1000``): inside it the JVM's
    uid is 1000, which passes the check, while on the host it still acts as
    root, so the root-owned cache and temp dirs stay usable. The uid must be
    *mapped* (not the overflow uid 65534 of a bare ``unshare --user``):
    Elasticsearch 8.18+ self-attaches its entitlement agent through the JVM
    attach socket, which fails for an unmapped uid.
    """
    global _ROOT_WRAPPER
    if _ROOT_WRAPPER is not None:
        return _ROOT_WRAPPER
    if os.geteuid() != 0:
        _ROOT_WRAPPER = []
        return _ROOT_WRAPPER
    unshare = shutil.which("unshare")
    if unshare:
        cmd = [unshare, "--user", "--map-user=1000", "--map-group=1000"]
        probe = subprocess.run(cmd + ["id", "-u"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "1000":
            _ROOT_WRAPPER = cmd
            return _ROOT_WRAPPER
        why = f"`{' '.join(cmd)} id -u` -> exit {probe.returncode}: {(probe.stdout + probe.stderr).strip()}"
    else:
        why = "`unshare` (util-linux) not found"
    raise EngineError(
        "running as root, and OpenSearch/Elasticsearch refuse to run as root; "
        f"could not drop to an unprivileged user namespace: {why}. Run the tests as a normal user."
    )


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:  # runs in the forked child, before exec
    """PR_SET_PDEATHSIG: SIGTERM the engine if the Python process dies (e.g. a killed pytest).

    Only used from the main thread: the signal fires when the *thread* that
    forked exits. For Elasticsearch the server JVM follows its CLI launcher.
    """
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _yaml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


@dataclass
class Engine:
    """A running (or stopped) single-node engine on 127.0.0.1."""

    kind: str
    version: str
    home: Path
    instance_dir: Path
    data_dir: Path
    http_port: int
    transport_port: int
    java_home: Path
    heap: str = DEFAULT_HEAP
    start_timeout: float = DEFAULT_START_TIMEOUT
    owns_instance_dir: bool = True
    owns_data_dir: bool = True
    pid: int | None = None
    handle: str = ""
    start_seconds: float | None = None
    extra_settings: dict = field(default_factory=dict)
    die_with_parent: bool = True
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    # -- public API ------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.instance_dir / "logs" / "console.log"

    def is_running(self) -> bool:
        if self.pid is None:
            return False
        if self._proc is not None:
            self._proc.poll()  # reap our child if it exited
        # whole process group: for Elasticsearch the server JVM is a child of the CLI launcher
        return _process_group_alive(self.pid)

    def start(self) -> "Engine":
        if self.is_running():
            raise EngineError(f"{self.kind} already running (pid {self.pid})")
        self._write_config()
        self._launch()
        self._wait_ready()
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT, *, cleanup: bool = True) -> None:
        """Graceful shutdown (SIGTERM to the process group, SIGKILL after ``timeout``).

        With ``cleanup`` the temporary instance dir (and data dir, if we made it) is removed.
        """
        self._signal_and_wait(signal.SIGTERM, timeout)
        if cleanup:
            self.cleanup()

    def kill(self) -> None:
        """SIGKILL the engine (crash simulation). Data dir and port are kept for ``restart()``."""
        self._signal_and_wait(signal.SIGKILL, 30.0)

    def restart(self, timeout: float | None = None) -> "Engine":
        """Stop (if running) and start again on the same port with the same data dir."""
        if self.is_running():
            self._signal_and_wait(signal.SIGTERM, DEFAULT_STOP_TIMEOUT)
        if timeout is not None:
            self.start_timeout = timeout
        if not (self._conf_dir / "jvm.options").is_file():
            self._write_config()  # stop() removed the instance dir: rebuild it (same ports)
        self._launch()
        self._wait_ready()
        return self

    def cleanup(self) -> None:
        if self.is_running():
            raise EngineError("refusing to remove the directories of a running engine")
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.owns_instance_dir:
            shutil.rmtree(self.instance_dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        """Key error lines of the current run, then the tails of the console and server logs."""
        chunks = []
        key: list[str] = []
        for path in (self.log_path, self.instance_dir / "logs" / f"{self.cluster_name}.log"):
            if not path.is_file():
                continue
            text = path.read_text(errors="replace")
            run = text.rsplit("===== flow-ingest: launching", 1)[-1].splitlines()
            for line in run:
                if (" ERROR " in line or "][ERROR]" in line or line.startswith(("Caused by:", "ERROR:"))
                        or "Exception: " in line and not line.startswith("\tat ")):
                    line = line.strip()
                    if line not in key:
                        key.append(line)
            tail = text.splitlines()[-lines:]
            chunks.append(f"--- {path} (last {len(tail)} lines) ---")
            chunks.extend(tail)
        if not chunks:
            return f"(no log in {self.instance_dir / 'logs'})"
        head = ["--- key lines ---", *key[:12]] if key else []
        return "\n".join(head + chunks)

    def request(self, method: str, path: str, body=None, timeout: float = 30.0):
        """Tiny JSON helper: returns (status, parsed-json-or-text)."""
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            data = data.encode() if isinstance(data, str) else data
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            ctype = "application/x-ndjson" if "_bulk" in path else "application/json"
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def plugins(self) -> set[str]:
        """Names of the modules and plugins loaded by the node."""
        status, body = self.request("GET", "/_nodes/plugins")
        if status != 200:
            raise EngineError(f"GET /_nodes/plugins -> {status}: {body}")
        names: set[str] = set()
        for node in body["nodes"].values():
            names |= {m["name"] for m in node.get("modules", [])}
            names |= {p["name"] for p in node.get("plugins", [])}
        return names

    def to_state(self) -> dict:
        return {
            "kind": self.kind,
            "version": self.version,
            "url": self.url,
            "pid": self.pid,
            "handle": self.handle,
            "home": str(self.home),
            "instance_dir": str(self.instance_dir),
            "data_dir": str(self.data_dir),
            "http_port": self.http_port,
            "transport_port": self.transport_port,
            "java_home": str(self.java_home),
            "heap": self.heap,
            "owns_instance_dir": self.owns_instance_dir,
            "owns_data_dir": self.owns_data_dir,
            "start_seconds": self.start_seconds,
        }

    @classmethod
    def from_state(cls, state: dict) -> "Engine":
        return cls(
            kind=state["kind"],
            version=state["version"],
            home=Path(state["home"]),
            instance_dir=Path(state["instance_dir"]),
            data_dir=Path(state["data_dir"]),
            http_port=state["http_port"],
            transport_port=state["transport_port"],
            java_home=Path(state["java_home"]),
            heap=state.get("heap", DEFAULT_HEAP),
            owns_instance_dir=state["owns_instance_dir"],
            owns_data_dir=state["owns_data_dir"],
            pid=state["pid"],
            handle=state["handle"],
            start_seconds=state.get("start_seconds"),
        )

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals -------------------------------------------------------

    @property
    def cluster_name(self) -> str:
        return f"flow-ingest-{self.handle}"

    @property
    def _conf_dir(self) -> Path:
        return self.instance_dir / "config"

    def _settings(self) -> dict:
        s = {
            "cluster.name": self.cluster_name,
            "node.name": "node-1",
            "network.host": "127.0.0.1",
            "http.port": self.http_port,
            "transport.port": self.transport_port,
            "discovery.type": "single-node",
            "path.data": str(self.data_dir),
            "path.logs": str(self.instance_dir / "logs"),
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
        }
        if self.kind == "elasticsearch":
            s["xpack.security.enabled"] = False
        s.update(self.extra_settings)
        return s

    def _write_config(self) -> None:
        conf = self._conf_dir
        if conf.exists():
            shutil.rmtree(conf)
        shutil.copytree(self.home / "config", conf)
        (self.instance_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.instance_dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        yml = "opensearch.yml" if self.kind == "opensearch" else "elasticsearch.yml"
        (conf / yml).write_text(
            "# written by tests/engines\n"
            + "".join(f"{k}: {_yaml_scalar(v)}\n" for k, v in self._settings().items())
        )
        # jvm.options: drop heap / gc-log / heap-dump lines, add ours (absolute paths).
        keep = []
        drop = re.compile(r"(-Xm[sx]|Xlog:gc|Xloggc|GCLog|HeapDump|ErrorFile|PrintGC|PrintTenuring)")
        for line in (conf / "jvm.options").read_text().splitlines():
            if drop.search(line):
                continue
            keep.append(line)
        logs = self.instance_dir / "logs"
        keep += [
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            f"-XX:ErrorFile={logs}/hs_err_pid%p.log",
            "-Xlog:disable",
            "-Xlog:all=warning:stderr:uptime,level,tags",
        ]
        (conf / "jvm.options").write_text("\n".join(keep) + "\n")

    def _launch(self) -> None:
        exe = self.home / "bin" / ("opensearch" if self.kind == "opensearch" else "elasticsearch")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OPENSEARCH_", "ES_")) and k not in ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS")
        }
        tmp = self.instance_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        if self.kind == "opensearch":
            env.update(
                OPENSEARCH_JAVA_HOME=str(self.java_home),
                OPENSEARCH_PATH_CONF=str(self._conf_dir),
                OPENSEARCH_TMPDIR=str(tmp),
            )
        else:
            env.update(
                ES_JAVA_HOME=str(self.java_home),
                ES_PATH_CONF=str(self._conf_dir),
                ES_TMPDIR=str(tmp),
            )
        env["JAVA_HOME"] = str(self.java_home)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== flow-ingest: launching {exe} at {time.ctime()} =====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                _root_wrapper() + [str(exe)],
                cwd=str(self.instance_dir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent and _in_main_thread() else None,
            )
        self.pid = self._proc.pid
        self._launched_at = time.monotonic()

    def _wait_ready(self) -> None:
        t0 = getattr(self, "_launched_at", time.monotonic())
        deadline = t0 + self.start_timeout
        health = f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s"
        last = "no answer yet"
        while True:
            if self._proc is not None and self._proc.poll() is not None and not _process_group_alive(self.pid):
                raise EngineError(
                    f"{self.kind} {self.version} exited with code {self._proc.returncode} before "
                    f"becoming ready (port {self.http_port}).\n{self.log_tail()}"
                )
            try:
                status, body = _http("GET", health, timeout=5)
                if status == 200:
                    self.start_seconds = round(time.monotonic() - t0, 1)
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            if time.monotonic() > deadline:
                self._signal_and_wait(signal.SIGKILL, 10)
                raise EngineError(
                    f"{self.kind} {self.version} not healthy (yellow) on {self.url} after "
                    f"{self.start_timeout:.0f}s; last answer: {last}\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def _signal_and_wait(self, sig: int, timeout: float) -> None:
        if self.pid is None:
            return
        pgid = self.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                self._proc.poll()
            if not _process_group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            end = time.monotonic() + 15
            while time.monotonic() < end and _process_group_alive(pgid):
                if self._proc is not None:
                    self._proc.poll()
                time.sleep(0.1)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)


def start_engine(
    kind: str,
    version: str | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    heap: str | None = None,
    timeout: float | None = None,
    java_home: str | os.PathLike | None = None,
    http_port: int | None = None,
    settings: dict | None = None,
    instance_dir: str | os.PathLike | None = None,
    die_with_parent: bool = True,
) -> Engine:
    """Fetch (if needed), start and wait for a single-node engine.

    Returns once ``GET /_cluster/health?wait_for_status=yellow`` answers 200;
    raises :class:`EngineError` (with the engine's log tail) otherwise.
    With ``die_with_parent`` (default) the engine gets SIGTERM if this Python
    process dies without stopping it; the CLI's ``start`` turns that off.
    """
    _check_kind(kind)
    version = version or default_version(kind)
    home = fetch(kind, version)
    jhome = find_java_home(kind, version, java_home)
    attempts = 1 if http_port else 3
    for attempt in range(1, attempts + 1):
        engine = _new_engine(kind, version, home, jhome, data_dir, heap, timeout, http_port, settings, instance_dir)
        engine.die_with_parent = die_with_parent
        try:
            engine.start()
            return engine
        except EngineError as e:
            with contextlib.suppress(Exception):
                engine._signal_and_wait(signal.SIGKILL, 10)
            port_clash = "BindException" in str(e) or "Address already in use" in str(e)
            if attempt < attempts and port_clash:
                # another process grabbed our "free" port between probe and bind
                with contextlib.suppress(Exception):
                    engine.cleanup()
                continue
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                engine._signal_and_wait(signal.SIGKILL, 10)
            raise
    raise AssertionError("unreachable")


def _new_engine(kind, version, home, jhome, data_dir, heap, timeout, http_port, settings, instance_dir) -> Engine:
    handle = f"{kind}-{version}-{uuid.uuid4().hex[:8]}"
    if instance_dir is None:
        inst = Path(tempfile.mkdtemp(prefix=f"flow-ingest-{kind}-"))
        owns_inst = True
    else:
        inst = Path(instance_dir)
        inst.mkdir(parents=True, exist_ok=True)
        owns_inst = False
    if data_dir is None:
        ddir, owns_data = inst / "data", True
    else:
        ddir, owns_data = Path(data_dir).resolve(), False
    return Engine(
        kind=kind,
        version=version,
        home=home,
        instance_dir=inst,
        data_dir=ddir,
        http_port=http_port or free_port(),
        transport_port=free_port(),
        java_home=jhome,
        heap=heap or os.environ.get("FLOW_INGEST_ENGINE_HEAP") or DEFAULT_HEAP,
        start_timeout=timeout or float(os.environ.get("FLOW_INGEST_ENGINE_START_TIMEOUT", DEFAULT_START_TIMEOUT)),
        owns_instance_dir=owns_inst,
        owns_data_dir=owns_data,
        handle=handle,
        extra_settings=dict(settings or {}),
    )
