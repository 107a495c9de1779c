"""Running the real programs (``twistd``, the CLI) as child processes from the source tree."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import yaml

from tests.support.config import config_data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: this source tree first on the path, no inherited config."""
    env = {k: v for k, v in os.environ.items() if k != "MAILBOX_APPLIANCE_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def write_config(path: str, data: dict) -> str:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class Twistd:
    """``twistd -n mailbox-appliance`` in a child process, its output in a file."""

    def __init__(self, cwd: str, *args: str):
        self.cwd = cwd
        self.log_path = os.path.join(cwd, "twistd.out")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "mailbox-appliance", *args],
            cwd=cwd,
            env=child_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Wait (bounded) until ``text`` is in the output; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            if self.process.poll() is not None:
                raise AssertionError(f"twistd exited ({self.process.returncode}):\n{out}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} did not appear within {timeout}s:\n{self.output()}")

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.wait()


def vm_field(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field (``VmHWM``, ``VmRSS``), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class ChildAppliance:
    """Set-up for tests against ``twistd -n mailbox-appliance`` in a child process: a config
    listening on ``services`` (free loopback ports in ``self.ports``), the domain
    example.test and alice@example.test (password "pw", 2 GiB quota), the process running."""

    services: tuple[str, ...] = ()
    config: dict = {}

    def setUp(self):
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.ports = {service: free_port() for service in self.services}
        data = config_data(
            os.path.join(self.workdir, "var"),
            listen={s: [f"tcp:{p}:interface=127.0.0.1"] for s, p in self.ports.items()},
            **self.config,
        )
        self.config_path = write_config(os.path.join(self.workdir, "appliance.yaml"), data)
        self.cli("domain", "add", "example.test")
        self.cli(
            "user", "add", "alice@example.test", "--password-stdin", "--quota", "2 GiB", stdin="pw"
        )
        self.twistd = self.start()

    def cli(self, *args: str, stdin: str | None = None) -> None:
        subprocess.run(
            [sys.executable, "-m", "mailbox_appliance", "--config", self.config_path, *args],
            input=stdin,
            text=True,
            env=child_env(),
            check=True,
            capture_output=True,
        )

    def start(self) -> Twistd:
        twistd = Twistd(self.workdir, "--config", self.config_path)
        self.addCleanup(lambda: twistd.process.poll() is None and twistd.stop())
        for service in self.services:
            twistd.wait_for(f"{service} listening on")
        return twistd
