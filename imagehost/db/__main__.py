"""``python -m imagehost.db``: migrate the database whose URL is on standard input to the
newest revision, then exit (``imagehost.db.upgrade_in_child`` runs it). Not meant to be run
by hand: ``imagehost db upgrade`` is the command for operators.
"""

import sys

from imagehost.db import create_engine, upgrade


def main() -> int:
    engine = create_engine(sys.stdin.read().strip())
    try:
        upgrade(engine)
    except Exception as e:  # one line for the parent, which reports it
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"{type(e).__name__}: {first}")  # on stdout: stderr may carry -v's lines
        return 1
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
