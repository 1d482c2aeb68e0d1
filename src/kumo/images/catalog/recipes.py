"""What the catalog holds: the layer builders (from host files or a Debian mirror) and the images made of them.

Host builders copy files that Debian packages installed on this machine (busybox-static, nginx-light,
python3.11) plus the shared libraries `ldd` names; they need no root and take a second or two. The Debian
builder runs `mmdebstrap --variant=minbase` against the mirror the host's apt uses and then installs
python3 into a copy of that root; it needs root and a reachable mirror, and gives two layers (debian, and
python3 on top) so `library/python` shares `library/debian`'s layer.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import inspect
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kumo.images.buildkit import BuildError, shared_libraries, which
from kumo.images.catalog import apps
from kumo.images.catalog.layers import (Tree, add_parents, diff_trees, directory, host_file, symlink, text,
                                        tree_fingerprint, tree_from_dir)

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUITE = "bookworm"
SLIM_DPKG_OPTIONS = (  # what Docker's debian:*-slim leaves out, kept in the image's dpkg config for later installs
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*", "path-exclude=/usr/share/groff/*", "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*", "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias")
PYTHON_PACKAGES = ("python3", "python-is-python3", "ca-certificates")  # as python:3-slim: `python`, TLS roots
APT_OPTIONS = ('Acquire::Languages "none"', 'APT::Install-Recommends "false"')
PYTHON_EXCLUDE = {"config-3.11-x86_64-linux-gnu", "idlelib", "tkinter", "turtledemo", "ensurepip", "test",
                  "site-packages", "dist-packages", "turtle.py", "lib2to3/tests", "unittest/test",
                  "sqlite3/test", "ctypes/test", "distutils/tests"}





Say = Callable[[str], None]


@dataclasses.dataclass
class Context:
    """What builders share during one run: the staging dir, package versions, where to report."""

    staging: Path
    say: Say
    started: float = dataclasses.field(default_factory=time.time)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)  # what builders found, for the state file
    _packages: dict[str, str] | None = None

    def package_versions(self) -> dict[str, str]:
        if self._packages is None:
            try:
                out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n"],
                                     capture_output=True, text=True, check=True).stdout
            except (OSError, subprocess.CalledProcessError):
                out = ""
            self._packages = {}
            for line in out.splitlines():
                name, version, status = (line.split("\t") + ["", ""])[:3]
                if status == "installed":
                    self._packages[name] = version
        return self._packages

    def versions(self, packages: tuple[str, ...]) -> dict[str, str]:
        have = self.package_versions()
        return {p: have.get(p, "") for p in packages}


@dataclasses.dataclass
class Builder:
    """Makes one or more layers. `inputs` lists what the result depends on (hashed with this builder's code);
    `build` returns a tree per layer name. A builder whose key is unchanged is not run again."""

    name: str
    layers: tuple[str, ...]
    packages: tuple[str, ...]  # Debian packages on the host it takes files from (their versions enter the key)
    inputs: Callable[[Context], list[str]]
    build: Callable[[Context], dict[str, Tree]]
    describe: Callable[[Context], dict[str, str]]  # layer name -> history "created_by"
    needs_root: bool = False

    def key(self, ctx: Context, common: str) -> str:
        h = hashlib.sha256(common.encode())
        for fn in (self.inputs, self.build, self.describe):
            h.update(inspect.getsource(fn).encode())
        h.update(repr(sorted(ctx.versions(self.packages).items())).encode())
        for line in self.inputs(ctx):
            h.update(line.encode() + b"\n")
        return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class ImageRecipe:
    repository: str
    tags: tuple[str, ...]
    layers: tuple[str, ...]  # base first
    config: Mapping[str, Any]  # the image config's `config` member


# ---------------------------------------------------------------- host files








def add_libraries(tree: Tree, *binaries: str) -> None:
    for lib in shared_libraries(*binaries):
        tree[lib.lstrip("/")] = host_file(lib)


def passwd_files(users: list[tuple[str, int, int, str, str]]) -> Tree:
    """/etc/passwd and /etc/group for (name, uid, gid, home, shell) entries, one group per user."""
    passwd = "".join(f"{n}:x:{u}:{g}:{n}:{h}:{s}\n" for n, u, g, h, s in users)
    group = "".join(f"{n}:x:{g}:\n" for n, _u, g, _h, _s in users)
    return {"etc/passwd": text(passwd), "etc/group": text(group)}


def busybox_tree(ctx: Context) -> Tree:
    busybox = which("busybox", "/bin/busybox", "/usr/bin/busybox")
    proc = subprocess.run([busybox, "--list-full"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BuildError(f"{busybox} --list-full failed: is it busybox-static?")
    if shared_libraries(busybox):
        raise BuildError(f"{busybox} is dynamically linked: install busybox-static")
    tree: Tree = {
        "bin": directory(), "dev": directory(), "etc": directory(), "home": directory(), "proc": directory(),
        "root": directory(0o700), "sys": directory(), "tmp": directory(0o1777), "usr": directory(),
        "usr/bin": directory(), "usr/sbin": directory(), "sbin": directory(), "var": directory(),
        "var/spool": directory(), "var/spool/mail": directory(), "var/www": directory(),
        "bin/busybox": host_file(busybox, 0o755),
        **passwd_files([("root", 0, 0, "/root", "/bin/sh"), ("nobody", 65534, 65534, "/home", "/bin/false")]),
        "etc/nsswitch.conf": text("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
    }
    for applet in sorted(set(proc.stdout.split())):
        applet = applet.lstrip("/")
        if applet != "bin/busybox":
            tree[applet] = symlink("/bin/busybox")
    return add_parents(tree)


def _busybox_inputs(ctx: Context) -> list[str]:
    return list(tree_fingerprint(busybox_tree(ctx)))


def _busybox_build(ctx: Context) -> dict[str, Tree]:
    return {"busybox": busybox_tree(ctx)}


def _busybox_describe(ctx: Context) -> dict[str, str]:
    v = ctx.versions(("busybox-static",))["busybox-static"]
    return {"busybox": f"kumo catalog: /bin/busybox from busybox-static {v} with its applets as symlinks, "
                       "/etc/passwd and /etc/group (root, nobody)"}


def nginx_tree(ctx: Context) -> Tree:
    nginx = which("nginx", "/usr/sbin/nginx")
    tree: Tree = {"usr/sbin/nginx": host_file(nginx, 0o755)}
    add_libraries(tree, nginx)
    for name in ("mime.types", "fastcgi_params", "fastcgi.conf", "scgi_params", "uwsgi_params",
                 "koi-utf", "koi-win", "win-utf"):
        if os.path.isfile(f"/etc/nginx/{name}"):
            tree[f"etc/nginx/{name}"] = host_file(f"/etc/nginx/{name}", 0o644)
    if "etc/nginx/mime.types" not in tree:
        raise BuildError("/etc/nginx/mime.types missing: install nginx-common (with nginx-light)")
    tree.update({
        "etc/nginx/nginx.conf": text(apps.NGINX_CONF),
        "etc/nginx/conf.d": directory(),
        "etc/nginx/conf.d/default.conf": text(apps.NGINX_DEFAULT_CONF),
        "usr/share/nginx/html/index.html": text(apps.NGINX_INDEX_HTML),
        "usr/share/nginx/html/50x.html": text(apps.NGINX_50X_HTML),
        "var/log/nginx": directory(),
        "var/log/nginx/access.log": symlink("/dev/stdout"),
        "var/log/nginx/error.log": symlink("/dev/stderr"),
        "var/lib/nginx": directory(),
        "var/cache/nginx": directory(),
        "run": directory(),
        "var/run": symlink("/run"),
        **passwd_files([("root", 0, 0, "/root", "/bin/sh"), ("www-data", 33, 33, "/var/www", "/bin/false"),
                        ("nginx", 101, 101, "/nonexistent", "/bin/false"),
                        ("nobody", 65534, 65534, "/home", "/bin/false")]),
    })
    return add_parents(tree)


def _nginx_inputs(ctx: Context) -> list[str]:
    return list(tree_fingerprint(nginx_tree(ctx)))


def _nginx_build(ctx: Context) -> dict[str, Tree]:
    return {"nginx": nginx_tree(ctx)}


def _nginx_describe(ctx: Context) -> dict[str, str]:
    v = ctx.versions(("nginx-light",))["nginx-light"]
    return {"nginx": f"kumo catalog: /usr/sbin/nginx from nginx-light {v} with its libraries, the official image's "
                     "nginx.conf and default page, logs to /dev/stdout and /dev/stderr, user nginx (101)"}


def python_min_tree(ctx: Context) -> Tree:
    python = which("python3.11", "/usr/bin/python3.11")
    stdlib = Path("/usr/lib/python3.11")
    if not (stdlib / "os.py").is_file():
        raise BuildError(f"{stdlib} missing: install python3.11")

    def ignore(path: str) -> bool:
        return path in PYTHON_EXCLUDE or path.endswith(".opt-1.pyc") or path.endswith(".opt-2.pyc")

    tree: Tree = {f"usr/lib/python3.11/{p}": n for p, n in tree_from_dir(stdlib, since=ctx.started,
                                                                         ignore=ignore).items()}
    tree["usr/lib/python3.11"] = directory()
    tree.update({"usr/bin/python3.11": host_file(python, 0o755), "usr/bin/python3": symlink("python3.11"),
                 "usr/bin/python": symlink("python3")})
    if os.path.isfile("/etc/python3.11/sitecustomize.py"):
        tree["etc/python3.11/sitecustomize.py"] = host_file("/etc/python3.11/sitecustomize.py", 0o644)
    add_libraries(tree, python, *sorted(glob.glob(str(stdlib / "lib-dynload" / "*.so"))))
    return add_parents(tree)


def _python_min_inputs(ctx: Context) -> list[str]:
    return list(tree_fingerprint(python_min_tree(ctx)))


def _python_min_build(ctx: Context) -> dict[str, Tree]:
    return {"python-min": python_min_tree(ctx)}


def _python_min_describe(ctx: Context) -> dict[str, str]:
    v = ctx.versions(("python3.11-minimal",))["python3.11-minimal"]
    return {"python-min": f"kumo catalog: python3.11 {v} with its standard library (no tests, idle, tkinter) "
                          "and libraries"}


def app_tree(files: Mapping[str, str], mode: Mapping[str, int] | None = None) -> Tree:
    tree: Tree = {path: text(content, (mode or {}).get(path, 0o644)) for path, content in files.items()}
    return add_parents(tree)


APP_FILES: dict[str, dict[str, str]] = {
    "aci-helloworld": {"usr/src/app/index.py": apps.HELLO_SERVER, "usr/src/app/web.py": apps.WEB_COMMON,
                       "usr/src/app/index.html": apps.HELLO_INDEX_HTML},
    "aci-hellofiles": {"usr/src/app/index.py": apps.HELLOFILES_SERVER, "usr/src/app/web.py": apps.WEB_COMMON},
    "aci-wordcount": {"usr/src/app/wordcount.py": apps.WORDCOUNT, "usr/src/app/hamlet.txt": apps.HAMLET},
}


def app_builder(name: str) -> Builder:
    def inputs(ctx: Context) -> list[str]:
        return list(tree_fingerprint(app_tree(APP_FILES[name])))

    def build(ctx: Context) -> dict[str, Tree]:
        tree = app_tree(APP_FILES[name])
        if name == "aci-hellofiles":
            tree["aci/logs"] = directory()
            tree = add_parents(tree)
        return {name: tree}

    def describe(ctx: Context) -> dict[str, str]:
        return {name: f"kumo catalog: the {name} app in /usr/src/app"}

    return Builder(name, (name,), (), inputs, build, describe)


# ---------------------------------------------------------------- Debian (mmdebstrap)


def _deb822_entries(text_: str) -> list[dict[str, str]]:
    entries = []
    for para in re.split(r"\n\s*\n", text_):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        if fields:
            entries.append(fields)
    return entries


def debian_mirrors(etc_apt: Path = Path("/etc/apt")) -> tuple[str, str]:
    """The Debian and Debian security mirrors the host's apt uses (deb.debian.org when none is found)."""
    found: list[tuple[str, list[str]]] = []  # (uri, suites)
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list")),
             *sorted((etc_apt / "sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            content = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for e in _deb822_entries(content):
                if "deb" in e.get("types", "").split() and e.get("enabled", "yes").lower() != "no":
                    for uri in e.get("uris", "").split():
                        found.append((uri, e.get("suites", "").split()))
        else:
            for line in content.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb":
                    found.append((parts[1], [parts[2]]))
    main = next((u for u, s in found if SUITE in s), None)
    security = next((u for u, s in found if f"{SUITE}-security" in s or f"{SUITE}/updates" in s), None)
    main = (main or "http://deb.debian.org/debian").rstrip("/")
    security = (security or main.rsplit("/", 1)[0] + "/debian-security").rstrip("/")
    return main, security


def mounts_below(path: Path) -> list[str]:
    """Mount points at or under `path` (from /proc/self/mountinfo)."""
    root = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point == root or point.startswith(root + "/"):
                    found.append(point)
    except OSError:
        pass
    return found


def remove_staging(path: Path) -> None:
    """Delete a staging dir, but never one with something mounted inside (a chroot's /dev or /proc)."""
    if not path.exists():
        return
    if mounted := mounts_below(path):
        raise BuildError(f"not removing {path}: still mounted there: {', '.join(mounted)}")
    shutil.rmtree(path)


def _run(cmd: list[str], say: Say, env: Mapping[str, str] | None = None, prefix: str = "    | ") -> None:
    """Run a command, echoing its output (stdout and stderr) line by line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            say(prefix + line)
            tail = (tail + [line])[-20:]
    if proc.wait() != 0:
        raise BuildError(f"{cmd[0]} failed with exit status {proc.returncode}")


DEBIAN_IGNORE = re.compile(r"""^(
    (dev|proc|sys|tmp)/.+ | run/.+ |
    etc/resolv\.conf | etc/hostname |
    var/cache/ldconfig/aux-cache | var/cache/apt/.+ | var/lib/apt/lists/.+ |
    var/log/(dpkg\.log|alternatives\.log|apt/.+) |
    var/cache/debconf/.+-old | var/lib/dpkg/.+-old
)$""", re.X)


def _debian_ignore(path: str) -> bool:
    return bool(DEBIAN_IGNORE.match(path))


def _debian_inputs(ctx: Context) -> list[str]:
    main, security = debian_mirrors()
    return [SUITE, main, security, *SLIM_DPKG_OPTIONS, *APT_OPTIONS, *PYTHON_PACKAGES, DEBIAN_IGNORE.pattern]


def _debian_build(ctx: Context) -> dict[str, Tree]:
    if os.geteuid() != 0:
        raise BuildError("building the Debian images needs root (mmdebstrap --mode=root and chroot)")
    mmdebstrap = which("mmdebstrap")
    main, security = debian_mirrors()
    base, py = ctx.staging / "debian", ctx.staging / "debian-python3"
    for d in (base, py):
        remove_staging(d)
    ctx.staging.mkdir(parents=True, exist_ok=True)
    env = {"SOURCE_DATE_EPOCH": str(1686355200), "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    t0 = time.monotonic()
    ctx.say(f"  mmdebstrap --variant=minbase {SUITE} from {main} (and {security}) …")
    _run([mmdebstrap, "--variant=minbase", "--mode=root", "--format=directory",
          "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
          *[f"--dpkgopt={o}" for o in SLIM_DPKG_OPTIONS], *[f"--aptopt={o}" for o in APT_OPTIONS],
          SUITE, str(base), f"deb {main} {SUITE} main", f"deb {main} {SUITE}-updates main",
          f"deb {security} {SUITE}-security main"], ctx.say, env)
    ctx.say(f"  debian root made in {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    ctx.say(f"  installing {', '.join(PYTHON_PACKAGES)} into a copy of it (apt-get in a chroot) …")
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(py)], check=True)
    if os.path.exists("/etc/resolv.conf"):
        shutil.copyfile("/etc/resolv.conf", py / "etc/resolv.conf")
    apt = "apt-get -o Dpkg::Use-Pty=0 -o APT::Color=0"
    packages = " ".join(PYTHON_PACKAGES)
    script = (f"set -e; mount -t proc proc '{py}/proc'; "
              f"chroot '{py}' sh -c '{apt} update -qq && {apt} install -y -qq --no-install-recommends {packages} "
              f"&& {apt} clean && rm -rf /var/lib/apt/lists/*'")
    # A private mount namespace: /proc is unmounted when it ends, whatever happens.
    _run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", script], ctx.say,
         {**env, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    ctx.say(f"  python3 installed in {time.monotonic() - t0:.1f} s")
    lower = tree_from_dir(base, since=ctx.started, ignore=_debian_ignore)
    upper = tree_from_dir(py, since=ctx.started, ignore=_debian_ignore)
    ctx.notes["debian_packages"] = _dpkg_list(py)
    return {"debian": lower, "debian-python3": diff_trees(lower, upper)}


def _dpkg_list(root: Path) -> dict[str, str]:
    status = (root / "var/lib/dpkg/status").read_text()
    out = {}
    for para in status.split("\n\n"):
        m = re.search(r"^Package: (\S+)", para, re.M)
        v = re.search(r"^Version: (\S+)", para, re.M)
        if m and v and "Status: install ok installed" in para:
            out[m.group(1)] = v.group(1)
    return out


def _debian_describe(ctx: Context) -> dict[str, str]:
    main, _security = debian_mirrors()
    return {"debian": f"kumo catalog: mmdebstrap --variant=minbase {SUITE} {main}, without docs, man pages "
                      "and locales (as debian:bookworm-slim)",
            "debian-python3": f"kumo catalog: apt-get install --no-install-recommends {' '.join(PYTHON_PACKAGES)}"}


# ---------------------------------------------------------------- the catalog


BUILDERS: dict[str, Builder] = {b.name: b for b in (
    Builder("busybox", ("busybox",), ("busybox-static",), _busybox_inputs, _busybox_build, _busybox_describe),
    Builder("nginx", ("nginx",), ("nginx-light", "nginx-common"), _nginx_inputs, _nginx_build, _nginx_describe),
    Builder("python-min", ("python-min",), ("python3.11-minimal", "libpython3.11-stdlib"), _python_min_inputs,
            _python_min_build, _python_min_describe),
    app_builder("aci-helloworld"), app_builder("aci-hellofiles"), app_builder("aci-wordcount"),
    Builder("debian", ("debian", "debian-python3"), ("mmdebstrap",), _debian_inputs, _debian_build,
            _debian_describe, needs_root=True),
)}

WEB_PORT = {"ExposedPorts": {"80/tcp": {}}}
PY_ENV = [PATH, "LANG=C.UTF-8"]

IMAGES: tuple[ImageRecipe, ...] = (
    ImageRecipe("library/busybox", ("latest", "stable"), ("busybox",), {"Env": [PATH], "Cmd": ["sh"]}),
    ImageRecipe("library/nginx", ("latest", "stable", "alpine", "1"), ("busybox", "nginx"),
                {"Env": [PATH, "NGINX_VERSION=1.22.1"], "Cmd": ["nginx", "-g", "daemon off;"], **WEB_PORT,
                 "StopSignal": "SIGQUIT"}),
    ImageRecipe("azuredocs/aci-helloworld", ("latest",), ("busybox", "python-min", "aci-helloworld"),
                {"Env": PY_ENV, "Cmd": ["python3", "/usr/src/app/index.py"], "WorkingDir": "/usr/src/app",
                 **WEB_PORT}),
    ImageRecipe("azuredocs/aci-hellofiles", ("latest",), ("busybox", "python-min", "aci-hellofiles"),
                {"Env": PY_ENV, "Cmd": ["python3", "/usr/src/app/index.py"], "WorkingDir": "/usr/src/app",
                 **WEB_PORT}),
    ImageRecipe("azuredocs/aci-wordcount", ("latest",), ("busybox", "python-min", "aci-wordcount"),
                {"Env": [*PY_ENV, "NumWords=10", "MinLength=0"], "Cmd": ["python3", "/usr/src/app/wordcount.py"],
                 "WorkingDir": "/usr/src/app"}),
    ImageRecipe("library/debian", ("bookworm-slim", "bookworm", "12-slim", "12", "latest"), ("debian",),
                {"Env": [PATH], "Cmd": ["bash"]}),
    ImageRecipe("library/python", ("3", "3.11", "3.11-slim", "3-slim", "latest", "slim"),
                ("debian", "debian-python3"), {"Env": PY_ENV, "Cmd": ["python3"]}),
)

LAYER_BUILDER: dict[str, Builder] = {layer: b for b in BUILDERS.values() for layer in b.layers}
