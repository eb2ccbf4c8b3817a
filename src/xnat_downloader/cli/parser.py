"""The argument parser every command uses: argparse, plus help for mistakes.

A mistyped flag gets "did you mean …"; xget's single-dash flags given to another command
get the flag that does the same there.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from xnat_downloader.cli.profiles import load_defaults
from xnat_downloader.errors import UsageError

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

# xget's flags, and what does the same for download/ls (or where to use them as they are).
XGET_FLAGS = {
    "-host": "-w URL",
    "-proj": "-p PROJECT",
    "-subj": "--subject S",
    "-start": "--since YYYY-MM-DD",
    "-end": "--until YYYY-MM-DD",
    "-acq": "--scan-type PATTERN",
    "-ass": "--assessors",
    "-recon": "--recons",
    "-format": "--resource LABEL",
    "-passfile": "~/.xnatPass is read by default",
    "-overwrite": "--overwrite",
    "-quiet": "-q",
    "-longname": "only 'xnat-downloader xget' names zips",
}


def xget_flags_in(argv: list[str]) -> list[str]:
    """Advice for each of xget's single-dash flags in ``argv`` (argparse would read
    ``-proj`` as ``-p roj``)."""
    return [suggestion(t, []) for t in argv if t.split("=", 1)[0] in XGET_FLAGS]


def unknown_tokens(message: str) -> list[str]:
    """The arguments argparse could not place, from its error message."""
    match = re.search(r"unrecognized arguments: (.*)$", message)
    return match.group(1).split() if match else []


def suggestion(token: str, known: list[str]) -> str:
    """Advice for one unknown argument (pure)."""
    flag = token.split("=", 1)[0]
    if flag in XGET_FLAGS:
        return (
            f"{flag} is xget's flag: here use {XGET_FLAGS[flag]} (or run "
            "'xnat-downloader xget …' to keep xget's flags)"
        )
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    return f"{flag}: did you mean {close[0]}?" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse with suggestions in its errors (exit 2, on stderr, as argparse does), and
    its help, usage and errors written to the streams the command was given."""

    streams: tuple[TextIO, TextIO] | None = None  # (stdout, stderr); None: sys's own

    def use_streams(self, stdout: TextIO, stderr: TextIO) -> None:
        """Write help, usage and errors here, in every subcommand too."""
        self.streams = (stdout, stderr)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if isinstance(sub, Parser):
                        sub.use_streams(stdout, stderr)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if self.streams is None or not message:
            super()._print_message(message, file)
            return
        target = self.streams[1] if file is sys.stderr else self.streams[0]
        target.write(message)

    def option_strings(self) -> list[str]:
        """Every flag this parser and its subcommands know."""
        found: list[str] = []
        for action in self._actions:
            found.extend(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if isinstance(sub, Parser):
                        found.extend(sub.option_strings())
        return sorted(set(found))

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        """As argparse does, after a ``--profile``'s settings became the defaults."""
        argv = list(sys.argv[1:] if args is None else args)
        Parser.last_argv = argv
        try:
            defaults = load_defaults(argv)
        except UsageError as exc:
            self.error(str(exc))
        self.apply_defaults(defaults)
        return super().parse_args(argv, namespace)

    def apply_defaults(self, defaults: dict[str, Any]) -> None:
        """Set the defaults of the flags these dests belong to, in subcommands too."""
        for action in self._actions:
            if action.dest in defaults:
                action.default = defaults[action.dest]
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if isinstance(sub, Parser):
                        sub.apply_defaults(defaults)

    last_error = ""  # the message of the last usage error, for a --json document
    last_argv: list[str] = []  # what the last parse_args was given

    def subcommand(self) -> tuple[str, Parser] | None:
        """The subcommand the last arguments named, and its parser (None if none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for token in Parser.last_argv:
                    sub = action.choices.get(token)
                    if isinstance(sub, Parser):
                        return token, sub
        return None

    def error(self, message: str) -> NoReturn:
        Parser.last_error = message
        known = self.option_strings()
        named = self.subcommand()
        hints = []
        for token in unknown_tokens(message):
            flag = token.split("=", 1)[0]
            if named is not None and flag in known and flag not in named[1].option_strings():
                # A flag of another command: 'did you mean' the same flag would puzzle.
                hints.append(f"{flag}: '{named[0]}' does not take it (see its --help)")
            elif hint := suggestion(token, named[1].option_strings() if named else known):
                hints.append(hint)
        self.print_usage(sys.stderr)
        text = f"{self.prog}: error: {message}"
        if hints:
            text += "\n" + "\n".join(f"  {h}" for h in hints)
        self.exit(2, text + "\n")
