"""Start and stop a real Label Studio server for the integration tests (127.0.0.1, temp data dir).

The server lives in its own virtualenv (`.ci/setup_label_studio.sh` makes `.venv-labelstudio`;
`HANDOS_LABEL_STUDIO_VENV` points elsewhere). The admin user and its legacy API token are made
non-interactively from environment variables, so no browser step is needed.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / ".venv-labelstudio"
USERNAME = "handos-tests@example.com"


def venv_path() -> Path:
    """Where the Label Studio virtualenv is expected."""
    return Path(os.environ.get("HANDOS_LABEL_STUDIO_VENV", DEFAULT_VENV))


def label_studio_exe() -> Path | None:
    """The `label-studio` executable of the side virtualenv, or None when it is not installed."""
    exe = venv_path() / "bin" / "label-studio"
    return exe if exe.exists() else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabelStudioServer:
    """One Label Studio process on 127.0.0.1; stop() and start() again keep the same data dir."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(20))  # 40 hex chars, legacy API token
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    started_at: float = 0.0

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The process environment: user, token and data dir set non-interactively."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
        env.update({
            "LABEL_STUDIO_USERNAME": USERNAME,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",  # no error reports leave the machine
            "FRONTEND_SENTRY_DSN": "",
            # the ML backend under test listens on 127.0.0.1: Label Studio refuses loopback backends (and the
            # webhook it adds for them) unless both of these are off; fine for a server bound to 127.0.0.1
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 600.0) -> LabelStudioServer:
        """Launch the server and wait until /health answers; raises RuntimeError with the log tail if not."""
        self.launch()
        return self.wait(timeout)

    def launch(self) -> LabelStudioServer:
        """Start the process without waiting (a fresh data dir gets the migrated template database)."""
        exe = label_studio_exe()
        if exe is None:
            raise RuntimeError(f"label-studio is not installed in {venv_path()} (run .ci/setup_label_studio.sh)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db = self.data_dir / "label_studio.sqlite3"
        template = venv_path() / "handos-db-template" / "label_studio.sqlite3"
        if not db.exists() and template.exists():
            shutil.copyfile(template, db)  # skips minutes of migrations; users and tokens are made at start
        self.log_path = self.data_dir / "server.log"
        log = open(self.log_path, "ab")
        cmd = [str(exe), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir)]
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=str(self.data_dir), start_new_session=True)
        log.close()
        self.started_at = time.monotonic()
        return self

    def wait(self, timeout: float = 600.0) -> LabelStudioServer:
        """Wait until /health answers (RuntimeError with the log tail if the process dies or time runs out)."""
        if self.proc is None:
            raise RuntimeError("label-studio was not launched")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.proc.returncode}: {self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"label-studio did not answer /health within {timeout:.0f} s: {self.log_tail()}")

    def healthy(self) -> bool:
        """True when /health answers 200."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the process group this object started (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=timeout)
        self.proc = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.healthy():
            time.sleep(0.2)

    def log_tail(self, n: int = 2000) -> str:
        """The last characters of the server log (for failure messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace").replace("\n", " | ")

    def cleanup(self) -> None:
        """Stop and remove the data dir."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def ensure_installed(timeout: float = 1200.0) -> str | None:
    """Install the server venv with .ci/setup_label_studio.sh if absent; None when ready, else why not."""
    if label_studio_exe() is not None:
        return None
    script = REPO / ".ci" / "setup_label_studio.sh"
    try:
        out = subprocess.run(["bash", str(script), str(venv_path())], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"could not run {script.name}: {err}"
    if out.returncode != 0 or label_studio_exe() is None:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"label-studio could not be installed into {venv_path()} ({tail[0][:200]})"
    return None


try:
    import pytest
except ImportError:  # used outside pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def label_studio_boot(tmp_path_factory):
        """A Label Studio process launched (not yet waited for), so slow fixtures can overlap its boot."""
        why = ensure_installed()
        if why:
            pytest.skip(why)
        base = tmp_path_factory.mktemp("labelstudio")
        local_root = base / "local-files"
        local_root.mkdir()
        server = LabelStudioServer(base / "data", extra_env={
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(local_root),
        })
        server.local_root = local_root  # type: ignore[attr-defined]
        server.launch()
        yield server
        server.cleanup()

    @pytest.fixture(scope="session")
    def label_studio(label_studio_boot):
        """A running Label Studio (127.0.0.1, free port, temp data dir, token made non-interactively), once per session.

        Local-files serving is on, rooted at `server.local_root`. Skipped, with the reason, only when the
        server cannot be installed.
        """
        label_studio_boot.wait(timeout=float(os.environ.get("HANDOS_LS_START_TIMEOUT", "600")))
        return label_studio_boot
