"""The ``bptt`` command line: parses options, builds a Model, calls the stages. No mathematics here.

Every mistake a user can make surfaces as one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

from ..errors import UsageError
from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is the run's own (0, or 1 for a failed check, proof or
    training), 2 for a usage mistake, 130 when interrupted. A closed or full standard output is a
    usage mistake; a reader that went away (``| head -1``) only cuts the output short."""
    from ..files import guarded_streams

    with guarded_streams() as streams:
        try:
            try:
                parser = build_parser()
                args = parser.parse_args(argv)
                if not getattr(args, "handler", None):
                    parser.print_help()
                    status = 2
                else:
                    from ..files import is_stdout

                    if is_stdout(getattr(args, "output", None)):
                        args.output = None  # -o - and -o /dev/stdout: print, as without -o
                    status = args.handler(args)
            except SystemExit as exit:  # --help and --version
                status = exit.code if isinstance(exit.code, int) else 0
            streams.finish()  # inside the try: a full standard output is reported, not ignored
            return status
        except UsageError as error:
            print(f"bptt: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("bptt: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
