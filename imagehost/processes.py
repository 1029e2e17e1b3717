"""``--workers N``: extra daemon processes that share the listening sockets.

One Python process is the ceiling for cached hits (the GIL), so the twistd process
listens as usual and then starts N-1 workers (``python -m imagehost.worker``) that
adopt the same sockets; the kernel hands each new connection to one of them. Every
worker builds its own object graph with ``tap.build_daemon``; nothing that
correctness needs is kept in one process's memory (see the README's Scale-out
section), so workers are to one another what several daemons on one machine are.
"""

from __future__ import annotations

import os
import socket
import sys

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

_log = Logger()
_RESPAWN_DELAY = 1.0


class WorkerProcesses(service.Service):
    """Starts ``count`` worker processes once the listeners are up; restarts a worker
    that dies; on stop, sends SIGTERM and waits for every worker to finish."""

    def __init__(self, reactor, count: int, listeners: list, arguments: list[str],
                 stop_timeout: float):
        self._reactor = reactor
        self._count = count
        self._listeners = listeners
        self._arguments = arguments
        self._stop_timeout = stop_timeout
        self.children: dict[int, _Worker] = {}

    def startService(self) -> None:
        super().startService()
        ready = gatherResults([listener.listening for listener in self._listeners])
        ready.addCallback(lambda _: [self._spawn(index) for index in range(1, self._count + 1)])
        ready.addErrback(lambda f: _log.failure("Workers not started", f))

    def _spawn(self, index: int) -> None:
        if not self.running:
            return
        fds = {0: "w", 1: 1, 2: 2}
        adopt = []
        for listener in self._listeners:
            fd = listener.port.fileno()
            fds[fd] = fd
            adopt += ["--adopt", f"{fd}:{_family_name(listener.port)}"]
        worker = _Worker(self, index)
        args = [sys.executable, "-m", "imagehost.worker", "--index", str(index), *adopt,
                *self._arguments]
        self._reactor.spawnProcess(worker, sys.executable, args, env=os.environ,
                                   childFDs=fds)
        self.children[index] = worker

    def ended(self, worker: _Worker, reason) -> None:
        self.children.pop(worker.index, None)
        if self.running:
            _log.error("Worker {index} exited ({reason}); restarting", index=worker.index,
                       reason=reason.value)
            self._reactor.callLater(_RESPAWN_DELAY, self._spawn, worker.index)

    def stopService(self) -> Deferred:
        super().stopService()
        waiting = [worker.stopped for worker in self.children.values()]
        for worker in list(self.children.values()):
            worker.signal("TERM")
        done = gatherResults(waiting)
        self._reactor.callLater(self._stop_timeout + 5, self._kill_stragglers)
        return done

    def _kill_stragglers(self) -> None:
        for worker in list(self.children.values()):
            worker.signal("KILL")


class _Worker(ProcessProtocol):
    def __init__(self, parent: WorkerProcesses, index: int):
        self.parent = parent
        self.index = index
        self.stopped: Deferred = Deferred()

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except Exception:  # already gone
            pass

    def processEnded(self, reason) -> None:
        self.parent.ended(self, reason)
        self.stopped.callback(None)


def _family_name(port) -> str:
    family = port.addressFamily
    return {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}[family]


FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}
