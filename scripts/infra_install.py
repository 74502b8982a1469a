"""Installing what the local infrastructure needs: Debian's packages (PostgreSQL, Redis, nginx, Prometheus,
Chromium) and the Kafka jars from Maven Central. Also the folders under `.local/` and the logging and
command helpers that the other infra modules share."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
RUN = LOCAL / "run"
LOGS = LOCAL / "logs"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "order-engine"
PG_VERSION_GLOB = "/usr/lib/postgresql/*/bin/pg_ctl"


def log(msg: str) -> None:
    print(f"[infra] {msg}", flush=True)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)  # type: ignore[call-overload]


# ---------------------------------------------------------------- packages


_apt_updated = False


def apt_install(*packages: str) -> None:
    global _apt_updated
    if not _apt_updated:
        log("apt-get update")
        run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        _apt_updated = True
    log(f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # policy-rc.d 101 keeps the packages' own init scripts from starting servers we then fight with.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if created:
            policy.unlink()


def ensure_packages() -> None:
    missing = []
    if not list(Path("/").glob(PG_VERSION_GLOB.lstrip("/"))):
        missing += ["postgresql", "postgresql-contrib"]
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    if not shutil.which("nginx"):
        missing.append("nginx-light")
    if not shutil.which("prometheus"):  # only the tests use it: a real scrape of every service
        missing.append("prometheus")
    if not shutil.which("chromium"):  # only the tests use it: the console, in a real browser (Playwright)
        missing.append("chromium")
    if missing:
        apt_install(*missing)


def ensure_service_user(name: str) -> None:
    """The unprivileged system user that `make run` runs the services and nginx's workers as, when it is
    started by root (shared/runtime/cli.py): no home, no shell, no password. Only root can add it, and only
    root needs it."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(name)
    except KeyError:
        log(f"adding the system user {name} (the services run as it)")
        run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ]
        )


def ensure_kafka_jars(version: str) -> Path:
    """The folder of Kafka `version`'s jars, resolved from Maven Central on first use and cached."""
    libs = CACHE / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    log(f"resolving Kafka {version} jars from Maven Central into {libs}")
    libs.mkdir(parents=True, exist_ok=True)
    run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(ROOT / "infra/kafka/pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-Dkafka.version={version}",
            f"-DoutputDirectory={libs}",
        ]
    )
    marker.touch()
    return libs
