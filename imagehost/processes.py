"""``--workers N``: extra daemon processes that serve the connections twistd accepts.

One Python process is the ceiling for cached hits (the GIL), so the twistd process
listens as usual and starts N-1 workers (``python -m imagehost.worker``). twistd
accepts every connection and hands them out in turn (itself, worker 1, worker 2, ...)
over a Unix socket per worker, passing the descriptor (SCM_RIGHTS). Letting every
process accept on the shared socket was tried first: the kernel then gave all 8
keep-alive clients of a benchmark to one process in 2 of 5 tries, leaving a core idle
(bench/README.md). Every worker builds its own object graph with ``assembly.build_daemon``;
nothing that correctness needs is kept in one process's memory (see the README's
Scale-out section), so workers are to one another what several daemons on one machine
are.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
from collections import deque
from collections.abc import Callable

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from imagehost.daemon import ListeningService
from imagehost.footprint import LEAN_INTERPRETER_OPTIONS
from imagehost.handoff import MARKER_BY_FAMILY, READY, TAKEN

_log = Logger()
_RESPAWN_DELAY = 1.0
_ACCEPTS_PER_WAKEUP = 64


class WorkerProcesses(service.Service):
    """Starts ``count`` worker processes once the listeners are up and deals the
    accepted connections out among twistd and the ready workers; restarts a worker that
    dies; on stop, sends SIGTERM and waits for every worker to finish."""

    def __init__(self, reactor, count: int, listeners: list[ListeningService], site,
                 arguments: list[str],
                 stop_timeout: float):
        self._reactor = reactor
        self._count = count
        self._listeners = listeners
        self._site = site
        self._arguments = arguments
        self._stop_timeout = stop_timeout
        self.children: dict[int, _Worker] = {}
        self._dealers: list[ConnectionDealer] = []

    def startService(self) -> None:
        super().startService()
        ready = gatherResults([listener.listening for listener in self._listeners])
        ready.addCallback(lambda ports: self._start(ports))
        ready.addErrback(lambda f: _log.failure("Workers not started", f))

    def _start(self, ports: list) -> None:
        if not self.running:
            return
        for port in ports:
            dealer = ConnectionDealer(self._reactor, port, self._site, self._ready_channels)
            dealer.start()
            self._dealers.append(dealer)
        for index in range(1, self._count + 1):
            self._spawn(index)

    def _ready_channels(self) -> list[_Channel]:
        return [worker.channel for worker in self.children.values() if worker.channel.ready]

    def _spawn(self, index: int) -> None:
        if not self.running:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel = _Channel(self._reactor, ours, functools.partial(
            serve_here, self._reactor, self._site))
        worker = _Worker(self, index, channel)
        args = [sys.executable, *LEAN_INTERPRETER_OPTIONS, "-m", "imagehost.worker",
                "--index", str(index),
                "--handoff", str(theirs.fileno()), *self._arguments]
        self._reactor.spawnProcess(worker, sys.executable, args, env=os.environ,
                                   childFDs={0: "w", 1: 1, 2: 2,
                                             theirs.fileno(): theirs.fileno()})
        theirs.close()
        worker.channel.start()
        self.children[index] = worker

    def ended(self, worker: _Worker, reason) -> None:
        self.children.pop(worker.index, None)
        worker.channel.close()
        if self.running:
            _log.error("Worker {index} exited ({reason}); restarting", index=worker.index,
                       reason=reason.value)
            self._reactor.callLater(_RESPAWN_DELAY, self._spawn, worker.index)

    def stopService(self) -> Deferred:
        super().stopService()
        for dealer in self._dealers:
            dealer.stop()
        self._dealers = []
        waiting = [worker.stopped for worker in self.children.values()]
        for worker in list(self.children.values()):
            worker.signal("TERM")
        done = gatherResults(waiting)
        self._reactor.callLater(self._stop_timeout + 5, self._kill_stragglers)
        return done

    def _kill_stragglers(self) -> None:
        for worker in list(self.children.values()):
            worker.signal("KILL")


class ConnectionDealer:
    """Reads a listening port in place of the port itself: accepts and gives each
    connection to the next of twistd and the ready workers (an ``IReadDescriptor``)."""

    def __init__(self, reactor, port, site, channels):
        self._reactor = reactor
        self._port = port
        self._site = site
        self._channels = channels
        self._turn = 0

    def start(self) -> None:
        self._port.stopReading()
        self._reactor.addReader(self)

    def stop(self) -> None:
        self._reactor.removeReader(self)

    def fileno(self) -> int:
        return self._port.fileno()

    def logPrefix(self) -> str:
        return "ConnectionDealer"

    def connectionLost(self, reason) -> None:
        self.stop()

    def doRead(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                connection, _address = self._port.socket.accept()
            except BlockingIOError:
                return
            except OSError as e:  # EMFILE and friends: as tcp.Port does, log and wait
                _log.warn("accept() failed: {error}", error=os.strerror(e.errno))
                return
            connection.setblocking(False)
            self._deal(connection)

    def _deal(self, connection: socket.socket) -> None:
        targets: list[_Channel | None] = [None, *self._channels()]
        self._turn = (self._turn + 1) % len(targets)
        for target in targets[self._turn:] + targets[:self._turn]:
            if target is None:
                serve_here(self._reactor, self._site, connection)
                return
            if target.hand_off(connection):
                return


def serve_here(reactor, site, connection: socket.socket) -> None:
    """Serve an accepted connection in this process."""
    with connection:
        reactor.adoptStreamConnection(connection.fileno(), connection.family, site)


class _Channel:
    """twistd's end of the Unix socket to one worker (an ``IReadDescriptor``).

    twistd keeps each connection it sent until the worker says it took it; if the worker
    dies first, twistd serves those itself. A worker says so before it reads from the
    connection, so nothing a client sent is lost either way.
    """

    def __init__(self, reactor, sock: socket.socket,
                 fallback: Callable[[socket.socket], None]):
        self._reactor = reactor
        self._socket = sock
        self._socket.setblocking(False)
        self._fallback = fallback
        self._unconfirmed: deque[socket.socket] = deque()
        self.ready = False

    def start(self) -> None:
        self._reactor.addReader(self)

    def hand_off(self, connection: socket.socket) -> bool:
        """Send ``connection`` to the worker; False if it cannot take it now."""
        if not self.ready:
            return False
        try:
            socket.send_fds(self._socket, [MARKER_BY_FAMILY[connection.family]],
                            [connection.fileno()])
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET, errno.ENOBUFS):
                _log.warn("Cannot hand a connection to a worker: {error}",
                          error=os.strerror(e.errno))
            return False
        self._unconfirmed.append(connection)
        return True

    def fileno(self) -> int:
        return self._socket.fileno()

    def logPrefix(self) -> str:
        return "WorkerChannel"

    def doRead(self) -> None:
        while self._socket.fileno() != -1:
            try:
                message = self._socket.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if message == READY:
                self.ready = True
            elif message and message == TAKEN * len(message):
                for _ in message:
                    self._unconfirmed.popleft().close()
            else:  # the worker is gone; ``ended`` follows
                self.close()

    def connectionLost(self, reason) -> None:
        self.close()

    def close(self) -> None:
        """Stop handing off; serve here what the worker did not take."""
        self.ready = False
        if self._socket.fileno() != -1:
            self._reactor.removeReader(self)
            self._socket.close()
        while self._unconfirmed:
            self._fallback(self._unconfirmed.popleft())


class _Worker(ProcessProtocol):
    def __init__(self, parent: WorkerProcesses, index: int, channel: _Channel):
        self.parent = parent
        self.index = index
        self.channel = channel
        self.stopped: Deferred = Deferred()

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except Exception:  # already gone
            pass

    def processEnded(self, reason) -> None:
        self.parent.ended(self, reason)
        self.stopped.callback(None)
