"""Entry point of one ``--workers`` process: ``python -m imagehost.worker``.

Started by ``imagehost.processes.WorkerProcesses`` with one end of a Unix socket as an
inherited file descriptor; twistd sends accepted connections over it. Not meant to be
run by hand.
"""

from __future__ import annotations

import ctypes
import getopt
import os
import select
import signal
import socket
import sys

from imagehost.handoff import FAMILY_BY_MARKER, READY, TAKEN

_CONFIRM_WAIT = 5.0  # seconds; twistd reads its side at once unless it is stuck


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the twistd process goes away (best effort)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class HandoffReceiver:
    """Serves the connections twistd sends over the hand-off socket (an
    ``IReadDescriptor``); stops the worker when twistd closes it."""

    def __init__(self, reactor, sock: socket.socket, site):
        self._reactor = reactor
        self._socket = sock
        self._socket.setblocking(False)
        self._site = site

    def start(self) -> None:
        self._reactor.addReader(self)
        self._socket.send(READY)

    def stop(self) -> None:
        self._reactor.removeReader(self)

    def fileno(self) -> int:
        return self._socket.fileno()

    def logPrefix(self) -> str:
        return "HandoffReceiver"

    def doRead(self) -> None:
        while True:
            try:
                marker, fds, _flags, _address = socket.recv_fds(
                    self._socket, 1, 4, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            except OSError:
                marker, fds = b"", []
            if not marker:
                self._twistd_gone()
                return
            for fd in fds:
                try:
                    self._reactor.adoptStreamConnection(fd, FAMILY_BY_MARKER[marker], self._site)
                finally:
                    os.close(fd)  # the reactor works on its own duplicate
                # Before the reactor reads from it: twistd serves it if we die now.
                if not self._confirm():
                    self._twistd_gone()
                    return

    def _confirm(self) -> bool:
        """Tell twistd a connection was taken, waiting a little if its side is full."""
        for _ in range(2):
            try:
                self._socket.send(TAKEN)
                return True
            except BlockingIOError:
                select.select([], [self._socket], [], _CONFIRM_WAIT)
            except OSError:
                return False
        return False

    def _twistd_gone(self) -> None:
        self.stop()
        if self._reactor.running:
            self._reactor.stop()

    def connectionLost(self, reason) -> None:
        self.stop()


class WorkerArguments:
    """What twistd passes a worker: ``--index N --handoff FD --data-dir DIR [--config FILE]``.

    Parsed with ``getopt``, not ``argparse``: argparse is a quarter of a megabyte of every
    worker's idle RSS, for arguments only twistd writes.
    """

    def __init__(self, argv: list[str]):
        try:
            pairs, rest = getopt.getopt(argv, "", ["index=", "handoff=", "config=", "data-dir="])
            options = {name[2:]: value for name, value in pairs}
            self.index = int(options["index"])
            self.handoff = int(options["handoff"])
            self.data_dir = options["data-dir"]
        except (getopt.GetoptError, KeyError, ValueError) as error:
            raise SystemExit(
                f"python -m imagehost.worker: bad arguments {argv!r}: {error}") from None
        if rest:
            raise SystemExit(f"python -m imagehost.worker: unexpected arguments {rest!r}")
        self.config = options.get("config")


def main(argv: list[str] | None = None) -> None:
    args = WorkerArguments(sys.argv[1:] if argv is None else argv)
    _die_with_parent()

    from imagehost import footprint
    from imagehost.config import load_config

    config = load_config(args.config, overrides={("server", "data_dir"): args.data_dir})
    footprint.leave_out_tls(config)  # before the reactor and PyJWT are imported

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

    from imagehost.assembly import build_daemon, read_secret

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    daemon = build_daemon(config, reactor, read_secret(config))
    daemon.startService()
    daemon.site.doStart()
    receiver = HandoffReceiver(reactor, socket.socket(fileno=args.handoff), daemon.site)
    receiver.start()
    Logger().info("imagehost worker {index} (pid {pid}) serving", index=args.index,
                  pid=os.getpid())
    reactor.callWhenRunning(footprint.freeze_startup_heap, f"imagehost worker {args.index}")

    async def stop() -> None:
        receiver.stop()
        await daemon.stopService()
        daemon.site.doStop()

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(stop()))
    reactor.run()


if __name__ == "__main__":
    main()
