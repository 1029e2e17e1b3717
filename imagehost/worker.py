"""Entry point of one ``--workers`` process: ``python -m imagehost.worker``.

Started by ``imagehost.processes.WorkerProcesses`` with the listening sockets as
inherited file descriptors; not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the twistd process goes away (best effort)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagehost.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--adopt", action="append", default=[], metavar="FD:FAMILY")
    parser.add_argument("--config")
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    _die_with_parent()

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

    from imagehost.config import load_config
    from imagehost.processes import FAMILIES
    from imagehost.tap import build_daemon, read_secret

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    config = load_config(args.config, overrides={("server", "data_dir"): args.data_dir})
    daemon, site = build_daemon(config, reactor, read_secret(config))
    daemon.startService()
    ports = []
    for spec in args.adopt:
        fd, family = spec.split(":")
        ports.append(reactor.adoptStreamPort(int(fd), FAMILIES[family], site))
        os.close(int(fd))  # the reactor works on its own duplicate
    Logger().info("imagehost worker {index} (pid {pid}) serving", index=args.index,
                  pid=os.getpid())

    async def stop() -> None:
        for port in ports:
            await port.stopListening()
        await daemon.stopService()

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(stop()))
    reactor.run()


if __name__ == "__main__":
    main()
