"""A RabbitMQ cluster of three nodes of its own on this machine, for the node-death scenario.

Each node is a ``rabbitmq-server`` process started from the installed RabbitMQ with a node
name (``rabbit-a@localhost`` ...), ports, data, log and config of its own under the test's
folder, and an Erlang cookie of its own (in a ``HOME`` of its own: the CLI tools read it
there too). The shared broker of this machine (its node, its port 5672, its cookie) is never
touched: every ``rabbitmqctl`` call names one of our nodes with ``-n``. Nodes ``b`` and ``c``
join ``a``; quorum queues declared afterwards get a member on every node.

:meth:`RabbitCluster.close` kills every node (its whole process group) and removes the
data, whatever happened before; the test calls it in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.harness import free_port

__all__ = ["RABBITMQ_BIN", "ClusterUnavailable", "Node", "RabbitCluster", "cluster_problem"]

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
"""The real scripts (``/usr/sbin/rabbitmq*`` are wrappers that switch to the rabbitmq
user and its home, i.e. its cookie and the shared node)."""
_START_TIMEOUT_S = 120
_CTL_TIMEOUT_S = 120


class ClusterUnavailable(RuntimeError):
    """The nodes could not be started or clustered here."""


def cluster_problem() -> str | None:
    """Why no cluster can be started on this machine, or None."""
    for tool in ("rabbitmq-server", "rabbitmqctl", "rabbitmq-queues"):
        if not (RABBITMQ_BIN / tool).exists():
            return f"{RABBITMQ_BIN / tool} is missing (RabbitMQ is not installed here)"
    if shutil.which("erl") is None and not Path("/usr/lib/erlang/bin/erl").exists():
        return "Erlang (erl) is not installed"
    return None


@dataclass
class Node:
    """One RabbitMQ node of the cluster."""

    letter: str
    folder: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    killed_at: float | None = None

    @property
    def name(self) -> str:
        return f"rabbit-{self.letter}@localhost"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        return f"<Node {self.name} amqp={self.port} {'up' if self.alive else 'down'}>"


class RabbitCluster:
    """Three RabbitMQ nodes clustered together, each on ports of its own."""

    def __init__(self, folder: Path, letters: Sequence[str] = ("a", "b", "c")) -> None:
        self.folder = folder
        self.home = folder / "home"
        self.cookie = secrets.token_hex(20)
        self.user = "chaos"
        self.password = secrets.token_urlsafe(12)
        self.nodes = {letter: Node(letter, folder / f"rabbit-{letter}") for letter in letters}
        self.ctl_path = folder / "rabbitmqctl-c"

    def __repr__(self) -> str:
        return f"<RabbitCluster {list(self.nodes.values())}>"

    # -- addresses ------------------------------------------------------------------------
    def url(self, letter: str) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.nodes[letter].port}/"

    def urls(self, letters: Iterable[str]) -> str:
        """One ``ICS_SMS_BROKER_URL`` naming these nodes, in this order."""
        return ",".join(self.url(letter) for letter in letters)

    # -- start ----------------------------------------------------------------------------
    def env(self, node: Node | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_"))}
        env["HOME"] = str(self.home)  # our cookie, for the server and the CLI tools
        env["ERL_EPMD_ADDRESS"] = "127.0.0.1"
        if node is not None:
            env.update({
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_BASE": str(node.folder),
                "RABBITMQ_MNESIA_BASE": str(node.folder / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.folder / "log"),
                "RABBITMQ_CONFIG_FILE": str(node.folder / "rabbitmq.conf"),
                "RABBITMQ_CONF_ENV_FILE": str(node.folder / "rabbitmq-env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.folder / "enabled_plugins"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                    "-kernel inet_dist_use_interface {127,0,0,1}",
            })
        return env

    def start(self) -> RabbitCluster:
        """Start the three nodes, cluster them, add the user; raises
        :class:`ClusterUnavailable` (after cleaning up) when that fails."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        for node in self.nodes.values():
            for sub in ("mnesia", "log"):
                (node.folder / sub).mkdir(parents=True, exist_ok=True)
            (node.folder / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.port}\n"
                "loopback_users = none\n"
                "log.console = false\n"
                "log.file.level = info\n")
            (node.folder / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
            (node.folder / "enabled_plugins").write_text("[].\n")  # no management listener
            self._launch(node)
        for node in self.nodes.values():
            self.wait_started(node)
        first, *others = self.nodes.values()
        for node in others:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
            self.ctl(node, "await_startup")
        self.ctl(first, "add_user", self.user, self.password)
        self.ctl(first, "set_permissions", "-p", "/", self.user, ".*", ".*", ".*")
        running = self.ctl(first, "cluster_status", "--formatter", "json")
        missing = [n.name for n in self.nodes.values() if n.name not in running]
        if missing:
            raise ClusterUnavailable(f"nodes not in the cluster: {missing}: {running[:500]}")
        self.ctl_path.write_text(
            "#!/bin/sh\n"
            f"HOME={self.home} exec {RABBITMQ_BIN / 'rabbitmqctl'} "
            f"-n {self.nodes['c'].name} \"$@\"\n")
        self.ctl_path.chmod(0o755)

    def _launch(self, node: Node) -> None:
        log = (node.folder / "stdout.log").open("ab")
        node.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env(node), cwd=node.folder,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # a process group of its own: kill -9 takes it whole
        log.close()

    def wait_started(self, node: Node) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if not node.alive:
                raise ClusterUnavailable(f"{node.name} exited while starting:\n"
                                         f"{self.log_tail(node)}")
            done = subprocess.run(
                [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", node.name, "await_startup",
                 "--timeout", "10"], env=self.env(), capture_output=True, text=True,
                timeout=_CTL_TIMEOUT_S, check=False)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"{node.name} did not start within "
                                         f"{_START_TIMEOUT_S}s: {done.stderr[-500:]}")
            time.sleep(0.5)

    # -- looking and killing ---------------------------------------------------------------
    def ctl(self, node: Node | str, *args: str, tool: str = "rabbitmqctl") -> str:
        """Run ``tool -n node args`` with our cookie; its stdout. Raises
        :class:`ClusterUnavailable` when it fails."""
        target = self.nodes[node] if isinstance(node, str) else node
        done = subprocess.run([str(RABBITMQ_BIN / tool), "-n", target.name, *args],
                              env=self.env(), capture_output=True, text=True,
                              timeout=_CTL_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise ClusterUnavailable(f"{tool} -n {target.name} {' '.join(args)} failed "
                                     f"({done.returncode}): {done.stderr.strip()[-800:]}")
        return done.stdout

    def any_alive(self) -> Node:
        return next(n for n in self.nodes.values() if n.alive)

    def leaders(self, prefix: str) -> dict[str, str]:
        """Queue name -> the node that leads it (quorum queues of the namespace)."""
        out = self.ctl(self.any_alive(), "list_queues", "-q", "--no-table-headers",
                       "name", "leader")
        found = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0].startswith(prefix):
                found[fields[0]] = fields[1]
        return found

    def members(self, queue: str) -> str:
        """``rabbitmq-queues quorum_status`` of ``queue`` (for diagnostics)."""
        return self.ctl(self.any_alive(), "quorum_status", queue, tool="rabbitmq-queues")

    def connections(self) -> dict[str, list[str]]:
        """Node letter -> the names of the client connections it holds (each service names
        its connection; the node is told by the AMQP port the client reached)."""
        out = self.ctl(self.any_alive(), "list_connections", "--formatter", "json", "port",
                       "client_properties")
        by_port = {node.port: letter for letter, node in self.nodes.items()}
        found: dict[str, list[str]] = {letter: [] for letter in self.nodes}
        for connection in json.loads(out or "[]"):
            names = [value for key, _type, value in connection["client_properties"]
                     if key == "connection_name"]
            letter = by_port.get(int(connection["port"]))
            if letter is not None:
                found[letter].append(names[0] if names else "(unnamed)")
        return found

    def letter_of(self, nodename: str) -> str:
        return next(n.letter for n in self.nodes.values() if n.name == nodename)

    def kill(self, letter: str) -> float:
        """kill -9 the node (its whole process group); the instant it was sent."""
        node = self.nodes[letter]
        assert node.process is not None
        node.killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(30)
        return node.killed_at

    def log_tail(self, node: Node, lines: int = 20) -> str:
        logs = [*sorted((node.folder / "log").glob("*.log")), node.folder / "stdout.log"]
        text = []
        for path in logs:
            with contextlib.suppress(OSError):
                text.append(f"--- {path.name}\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(text)

    def close(self) -> None:
        """Kill every node we started and remove their data (idempotent)."""
        for node in self.nodes.values():
            if node.process is None:
                continue
            if node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(30)
            # the process group may outlive its leader (erl_child_setup, inet_gethost)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.process.pid, signal.SIGKILL)
        for node in self.nodes.values():
            shutil.rmtree(node.folder / "mnesia", ignore_errors=True)
