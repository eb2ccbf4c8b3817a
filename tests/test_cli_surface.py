"""The command line as a newcomer meets it (issue 19): output, --json, help, mistakes."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from minixnat.cli import build_parser as minixnat_parser
from tests.conftest import BIN, Server
from tests.test_download import ENV, cli
from xnat_downloader.cli.main import build_parser, command_first, legacy_parser
from xnat_downloader.cli.profiles import defaults_of
from xnat_downloader.cli.progress import FAILURE_LINES, PlainProgress, human_bytes, resuming_line
from xnat_downloader.http.client import connection_hint
from xnat_downloader.transfer.events import BytesMoved, FileFailed, Planned


def parsers() -> list[argparse.ArgumentParser]:
    """Every parser of both programs, subcommands included."""
    found = [build_parser(), legacy_parser(), minixnat_parser()]
    queue = list(found)
    while queue:
        parser = queue.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                subs = [p for p in action.choices.values() if p not in found]
                found += subs
                queue += subs
    return found


def test_help_texts_are_for_users_and_every_option_has_one() -> None:
    for parser in parsers():
        text = parser.format_help()
        for internal in ("CONTRACT", "§", "``", "seed 0"):
            assert internal not in text, f"{parser.prog} --help shows {internal!r}"
        for action in parser._actions:
            if action.option_strings and action.help is None:
                pytest.fail(f"{parser.prog} {action.option_strings[0]} has no help line")


def test_both_programs_print_their_version() -> None:
    for program in ("xnat-downloader", "minixnat"):
        done = subprocess.run([BIN / program, "--version"], capture_output=True, text=True)
        assert done.returncode == 0
        assert re.fullmatch(rf"{program} \d+\.\d+\.\d+\n", done.stdout)


def test_one_unit_family_and_what_a_resumed_run_says() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1_500_000) == "1.5 MB"
    assert human_bytes(2_000_000_000) == "2.0 GB"
    assert resuming_line(Planned(10, 1000)) is None
    assert resuming_line(Planned(10, 5_000_000, 4, 2_000_000)) == (
        "resuming: 4 files (2.0 MB) already verified; 6 files (3.0 MB) to fetch"
    )
    # Metadata documents and gaps are in the total, not among the files to fetch.
    assert resuming_line(Planned(13, 5_000_000, 4, 2_000_000, 3)) == (
        "resuming: 4 files (2.0 MB) already verified; 6 files (3.0 MB) to fetch"
    )
    assert resuming_line(Planned(2, 2000, 1, 1000)) == (
        "resuming: 1 file (1.0 kB) already verified; 1 file (1.0 kB) to fetch"
    )


def test_ls_dates_and_a_readable_dry_run(shared_server: Server, tmp_path: Path) -> None:
    code, out, _ = cli("ls", "-w", shared_server.url, "-p", "DEMO01")
    assert code == 0
    assert "<10" not in out
    assert re.search(r"DEMO01_S001_MR1\s+DEMO01_S001\s+\d{4}-\d\d-\d\d\s", out)
    assert re.match(r"total: \d+ sessions, \d+ scans, ", out.strip().splitlines()[-1])
    code, out, _ = cli("ls", "-w", shared_server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1")
    assert code == 0
    assert re.match(r"total: 1 session, \d+ scans, ", out.strip().splitlines()[-1])
    code, out, _ = cli("download", "-w", shared_server.url, "-p", "DEMO01", "--dry-run",
                       "-o", str(tmp_path))  # fmt: skip
    lines = out.strip().splitlines()
    assert lines[-1].startswith("plan: ")
    assert any(re.match(r"\s+\d+ files\s+[\d.]+ [kMG]?B\s+\d+ scans\s+DEMO01/", ln) for ln in lines)
    assert not any(".dcm" in ln for ln in lines)  # per session, not per file
    code, listed, _ = cli("download", "-w", shared_server.url, "-p", "DEMO01", "--dry-run",
                          "--list-files", "-o", str(tmp_path))  # fmt: skip
    files = int(lines[-1].split()[1])
    assert sum(1 for ln in listed.splitlines() if ln.rstrip().endswith(".dcm")) <= files
    assert len(listed.strip().splitlines()) == files + 1


def test_a_selection_flag_takes_several_values_or_repeats(
    shared_server: Server, tmp_path: Path
) -> None:
    """CONTRACT writes `-p PROJECT ...`: `-p A B` and `-p A -p B` select the same."""
    plans = []
    for projects in (["-p", "DEMO01", "DEMO02"], ["-p", "DEMO01", "-p", "DEMO02"]):
        code, out, err = cli("download", "-w", shared_server.url, *projects, "--dry-run",
                             "--json", "-o", str(tmp_path))  # fmt: skip
        assert code == 0, err
        plans.append(sorted(e["local"] for e in json.loads(out)))
    assert plans[0] == plans[1]
    assert {p.split("/")[0] for p in plans[0]} == {"DEMO01", "DEMO02"}


def test_ls_with_nothing_selected_lists_the_projects_to_choose_from(
    shared_server: Server,
) -> None:
    """A newcomer's first command, `ls -w URL`, shows what can be named with -p rather than
    refusing for want of a project; --json gives the same as one document."""
    code, out, err = cli("ls", "-w", shared_server.url)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert re.fullmatch(r"DEMO01\s+Demo project 1", lines[0])
    assert lines[-1] == "2 projects; list one's sessions with -p PROJECT"
    code, out, _ = cli("ls", "-w", shared_server.url, "--json")
    assert code == 0
    listed = json.loads(out)["projects"]
    assert [p["id"] for p in listed] == ["DEMO01", "DEMO02"]
    assert listed[0]["secondary_id"] == "DEMO_01"
    # A constraint with nothing to narrow is said, not dropped for the project list.
    code, _, err = cli("ls", "-w", shared_server.url, "--scan-type", "T1w")
    assert code == 2
    assert "--scan-type narrow what a project holds: name the project with -p" in err


def test_a_manifest_or_catalog_refuses_the_flags_it_would_ignore(tmp_path: Path) -> None:
    """A saved plan fixes the files and their paths: -p or --layout beside it were silently
    ignored; both commands that take a manifest now refuse them, before any request."""
    manifest = tmp_path / "manifest.json"
    for command in ("download", "slurm"):
        code, _, err = cli(command, "-w", "http://127.0.0.1:9", "--manifest", str(manifest),
                           "-o", str(tmp_path / "o"), "-p", "DEMO02", "--layout", "flat",
                           *(["--shards", "2"] if command == "slurm" else []))  # fmt: skip
        assert code == 2, err
        assert "--manifest fixes what is fetched and where it goes: leave out -p, --layout" in err
    # --no-X of an on/off pair is given too (its False is an answer, not "not given").
    code, _, err = cli("download", "-w", "http://127.0.0.1:9", "--manifest", str(manifest),
                       "-o", str(tmp_path / "o"), "--no-include-project")  # fmt: skip
    assert code == 2
    assert "leave out --[no-]include-project" in err
    assert not (tmp_path / "o").exists()
    # A catalog, likewise; ls and copy, which cannot use one, say so.
    code, _, err = cli("download", "-w", "http://127.0.0.1:9", "--catalog", str(manifest),
                       "-o", str(tmp_path / "o"), "--scan-type", "T1w")  # fmt: skip
    assert code == 2
    assert "--catalog fixes what is fetched and where it goes: leave out --scan-type" in err
    code, _, err = cli("download", "-w", "http://127.0.0.1:9", "-p", "P", "--list-files",
                       "-o", str(tmp_path / "o"))  # fmt: skip
    assert code == 2
    assert "--list-files lists what a --dry-run would fetch: add --dry-run" in err
    code, _, err = cli("ls", "-w", "http://127.0.0.1:9", "--catalog", str(manifest))
    assert code == 2
    assert "download --catalog FILE --dry-run" in err
    code, _, err = cli("copy", "--from", "http://127.0.0.1:9", "--to", "http://127.0.0.1:10",
                       "-p", "P", "--catalog", str(manifest))  # fmt: skip
    assert code == 2
    assert "not a catalog" in err
    assert not (tmp_path / "o").exists()


def test_a_dry_run_or_listing_with_a_selected_session_missing_is_not_clean(
    shared_server: Server, tmp_path: Path
) -> None:
    """A named session that is not there: the dry run and ls still show what is there,
    say what is not ('not in the plan: …', and in ls --json), and exit 1, as the download
    itself would; without the missing name both exit 0."""
    base = ["-w", shared_server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1"]
    for command in (["download", *base, "--dry-run", "-o", str(tmp_path)], ["ls", *base]):
        code, out, err = cli(*command, "-s", "NO_SUCH_SESSION")
        assert code == 1, err
        assert "not in the plan: session NO_SUCH_SESSION: not found" in err
        assert "DEMO01_S001_MR1" in out
        code, _, err = cli(*command)
        assert code == 0, err
    code, out, _ = cli("ls", *base, "-s", "NO_SUCH_SESSION", "--json")
    assert code == 1
    assert json.loads(out)["not_in_plan"] == [
        {"what": "session NO_SUCH_SESSION", "why": "not found in the selected projects"}
    ]


def test_failures_past_the_first_ones_are_counted_not_listed() -> None:
    """A server that stops answering fails every file left, for one cause: the first get a
    line each, the rest one line that counts them (the report lists every file)."""
    out = io.StringIO()
    with PlainProgress(out, every=float("inf")) as shown:
        shown(Planned(FAILURE_LINES + 7, 0))
        for i in range(FAILURE_LINES + 7):
            shown(FileFailed(f"f{i}", "the server stopped answering"))
    lines = out.getvalue().splitlines()
    assert lines[:FAILURE_LINES] == [f"failed: f{i}: the server stopped answering"
                                     for i in range(FAILURE_LINES)]  # fmt: skip
    assert lines[FAILURE_LINES:] == ["… and 7 more failed (each is in the run's report)"]


def test_a_progress_line_gives_a_rate_only_once_bytes_moved() -> None:
    """The first line comes with the plan, before a byte has moved: no "0 B/s" then."""
    out = io.StringIO()
    with PlainProgress(out, every=0.0) as shown:
        shown(Planned(2, 2048))
        shown(BytesMoved("a", 1024))
    first, second = out.getvalue().splitlines()
    assert first == "progress: 0/2 files, 0 B of 2.0 kB"
    assert re.fullmatch(r"progress: 0/2 files, 1\.0 kB of 2\.0 kB, .+/s", second)


def test_minixnats_commands_take_json_too(tmp_path: Path) -> None:
    """One JSON document on stdout and nothing else, for what each did and for a refusal."""

    def run(*args: str) -> tuple[int, object]:
        done = subprocess.run([BIN / "minixnat", *args, "--json"], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        return done.returncode, json.loads(done.stdout)

    root = str(tmp_path / "r")
    small = ("--projects", "1", "--subjects", "1", "--sessions", "1", "--files", "1")
    assert run("demo-data", root, *small) == (0, {"ok": True, "root": root, "admin": "admin"})
    code, doc = run("check", "--root", root)
    assert code == 0
    assert isinstance(doc, dict)
    assert doc["ok"] is True
    assert doc["problems"] == []
    assert run("user", "add", "--root", root, "bo", "--password", "pw") == (
        0, {"ok": True, "user": "bo", "admin": False})  # fmt: skip
    assert run("project", "access", "--root", root, "DEMO01", "public") == (
        0, {"ok": True, "project": "DEMO01", "access": "public"})  # fmt: skip
    assert run("project", "member", "--root", root, "DEMO01", "bo", "member") == (
        0, {"ok": True, "project": "DEMO01", "user": "bo", "role": "member"})  # fmt: skip
    code, doc = run("project", "access", "--root", root, "NOPE", "public")
    assert code == 2
    assert doc == {"ok": False, "error": "no project NOPE", "exit": 2}
    code, doc = run("demo-data", root)
    assert code == 2
    assert isinstance(doc, dict)
    assert "already holds an archive" in str(doc["error"])


def test_a_reader_that_goes_away_ends_the_output_quietly(shared_server: Server) -> None:
    """`ls | head`: the reader closes its end before the listing is written.  Both programs
    end as a command killed by SIGPIPE would (141), with no traceback on stderr."""
    env = {**os.environ, **ENV}
    for argv in ([BIN / "xnat-downloader", "ls", "-w", shared_server.url, "-p", "DEMO01"],
                 [BIN / "minixnat", "check", "--root", str(shared_server.root)]):  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()  # gone before the first line
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141, err
        assert "Traceback" not in err, err
        assert "BrokenPipe" not in err, err


def test_the_program_leaves_nothing_unwritten_when_it_exits(
    shared_server: Server, tmp_path: Path
) -> None:
    """The program skips Python's own shutdown (``console``): what a command wrote to a
    pipe, and its run log, must still be whole.  Both ways of starting it, with the exit
    status of the command itself, also when it is not 0."""
    # Buffered output, as a user's shell has it (this machine sets PYTHONUNBUFFERED).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | ENV
    base = ["ls", "-w", shared_server.url, "-p", "DEMO01", "--json"]
    code, expected, _ = cli(*base)
    assert code == 0
    refused, _, why = cli(*base, "-s", "NO_SUCH_SESSION")
    assert refused != 0
    for program in ([str(BIN / "xnat-downloader")], [str(BIN / "python"), "-m", "xnat_downloader"]):
        done = subprocess.run([*program, *base], capture_output=True, env=env, timeout=120)
        assert (done.returncode, done.stdout.decode()) == (0, expected), done.stderr
        missing = subprocess.run([*program, *base, "-s", "NO_SUCH_SESSION"],
                                 capture_output=True, env=env, timeout=120)  # fmt: skip
        assert (missing.returncode, missing.stderr.decode()) == (refused, why)
    out = tmp_path / "dl"
    done = subprocess.run([str(BIN / "xnat-downloader"), "download", "-w", shared_server.url,
                           "-p", "DEMO01", "-o", str(out), "-vv"],
                          capture_output=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("done: "), done.stdout
    lines = done.stderr.decode().splitlines()
    (log,) = (out / ".xnat-downloader" / "logs").glob("run-*.log")
    # The records the console showed are in the log too, the last one included.
    shown = [line.split(" ", 1)[1] for line in lines if line.startswith("DEBUG ")]
    assert shown
    assert shown[-1] in log.read_text()


def test_json_is_one_document_on_stdout_for_results_and_for_errors(
    shared_server: Server, tmp_path: Path
) -> None:
    base = ["-w", shared_server.url, "-p", "DEMO01"]
    code, out, _ = cli("download", *base, "-o", str(tmp_path / "a"), "--json")
    assert code == 0
    doc = json.loads(out)  # the whole of stdout
    assert doc["ok"] is True
    assert doc["files"] == doc["verified"] > 0
    assert doc["failures"] == []
    assert Path(doc["report"]).is_file()
    assert Path(doc["log"]).is_file()
    code, out, _ = cli("download", *base, "--dry-run", "--json", "-o", str(tmp_path / "b"))
    assert isinstance(json.loads(out), list)
    code, out, err = cli("download", "-w", shared_server.url, "-p", "NOPE", "--json",
                         "-o", str(tmp_path / "c"))  # fmt: skip
    assert code == 2
    assert json.loads(out) == {"ok": False, "error": err.strip().removeprefix("error: "),
                               "exit": 2}  # fmt: skip
    code, out, _ = cli("xget", "-host", shared_server.url, "-proj", "DEMO01", "-o",
                       str(tmp_path / "x"), "--json")  # fmt: skip
    assert code == 0
    assert json.loads(out)["written"]
    code, out, _ = cli("upload", "-w", shared_server.url, "-p", "DEMO02", "--subject", "NEW",
                       "--session", "NEW_MR", str(tmp_path / "a" / "DEMO01" / "DEMO01_S001"
                                                  / "DEMO01_S001_MR1"), "--json")  # fmt: skip
    doc = json.loads(out)
    assert code == 0, doc
    assert doc["failed"] == 0
    assert doc["verified"] > 0


def test_mistakes_get_help_and_leave_nothing_behind(shared_server: Server, tmp_path: Path) -> None:
    code, _, err = cli("dowload", "-p", "X")
    assert code == 2
    assert "did you mean download?" in err
    code, _, err = cli("download", "-w", shared_server.url, "-proj", "DEMO01")
    assert code == 2
    assert "-proj is xget's flag: here use -p PROJECT" in err
    done = subprocess.run([BIN / "xnat-downloader", "download", "--ouput", "d"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    assert "--ouput: did you mean --output?" in done.stderr
    # Another command's flag is said to be so, not offered back as "did you mean" itself.
    code, _, err = cli("copy", "--from", "a", "--to", "b", "-p", "P", "--dry-run")
    assert code == 2
    assert "--dry-run: 'copy' does not take it (see its --help)" in err
    assert "did you mean" not in err
    code, _, err = cli("ls", "-w", f"{shared_server.url}/data/projects/DEMO01", "-p", "DEMO01")
    assert code == 2
    assert f"use -w {shared_server.url}" in err
    code, _, err = cli("ls", "-w", shared_server.url.replace("http://", "https://"),
                       "-p", "DEMO01")  # fmt: skip
    assert code == 2
    assert "use http:// instead of https://" in err
    for bad, why in (("http://[::1", "Invalid IPv6 URL"), ("http://h:abc", "Port could not be"),
                     ("http://h:99999", "Port out of range")):  # fmt: skip
        code, _, err = cli("ls", "-w", bad, "-p", "DEMO01")
        assert code == 2
        assert err.startswith(f"error: {bad!r} is not a valid server URL ({why}"), err
    assert "no scheme was given" in connection_hint("refused", "https://h", True)
    assert connection_hint("refused", "https://h", False) == ""
    failed = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
    for words, hint in (("Hostname mismatch, certificate is not valid for 'h'", "another name"),
                        ("certificate has expired", "has expired"),
                        ("self-signed certificate", "--ca-bundle FILE")):  # fmt: skip
        assert hint in connection_hint(failed + words, "https://h", False)
    # A wrong password and an unknown project: no output folder, no state, no log.
    for flags, env in (
        (["-p", "DEMO01"], {"XNAT_USER": "admin", "XNAT_PASS": "wrong"}),
        (["-p", "NOPE"], {"XNAT_USER": "admin", "XNAT_PASS": "admin"}),
    ):
        out = tmp_path / "never"
        code, _, _ = cli("download", "-w", shared_server.url, *flags, "-o", str(out), env=env)
        assert code == 2
        assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    code, _, _ = cli("download", "-w", shared_server.url, "-p", "NOPE", "-o", str(kept))
    assert code == 2
    assert kept.is_dir()
    assert list(kept.iterdir()) == []


def test_verbosity_flags_may_come_before_the_command(shared_server: Server) -> None:
    """``xnat-downloader -vv ls …`` as ``ls … -vv``; it once read as the seed tool's form
    and was refused ("unrecognized arguments: ls …")."""
    code, out, err = cli("-vv", "ls", "-w", shared_server.url, "-p", "DEMO01")
    assert code == 0, err
    assert "DEBUG GET" in err  # -vv took effect
    assert out == cli("ls", "-w", shared_server.url, "-p", "DEMO01")[1]
    moved = command_first(["-q", "-v", "copy", "--from", "a", "--", "x"])
    assert moved == ["copy", "--from", "a", "-q", "-v", "--", "x"]
    # The seed tool's form keeps its order, even with a folder named like a command.
    assert command_first(["-v", "-o", "copy", "-w", "u"]) == ["-v", "-o", "copy", "-w", "u"]
    assert command_first(["-v"]) == ["-v"]


def test_profiles_name_servers_without_passwords(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config = tmp_path / "xnat-downloader" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[profiles.demo]\nurl = "{shared_server.url}"\nuser = "admin"\njobs = 2\n')
    code, out, err = cli("ls", "--profile", "demo", "-p", "DEMO01", env={"XNAT_PASS": "admin"})
    assert code == 0, err
    assert "DEMO01_S001_MR1" in out

    def program(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BIN / "xnat-downloader", *args], capture_output=True, text=True,
                              env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)})  # fmt: skip

    refused = program("ls", "--profile", "nope", "-p", "DEMO01")
    assert refused.returncode == 2
    assert f"no profile 'nope' in {config}" in refused.stderr
    config.write_text('[profiles.demo]\nurl = "http://x"\npassword = "hunter2"\n')
    refused = program("ls", "--profile", "demo", "-p", "DEMO01")
    assert refused.returncode == 2
    assert "holds a password" in refused.stderr
    assert "hunter2" not in refused.stderr
    # A setting of the wrong kind is named (url = 5 became a request to https://5).
    config.write_text("[profiles.demo]\nurl = 5\n")
    refused = program("ls", "--profile", "demo", "-p", "DEMO01")
    assert refused.returncode == 2
    assert "[profiles.demo]" in refused.stderr
    assert 'url must be text, e.g. url = "…"' in refused.stderr
    config.write_text('[profiles.demo]\nurl = "http://x"\nmax_requests = 0\n')
    refused = program("ls", "--profile", "demo", "-p", "DEMO01")
    assert refused.returncode == 2
    assert "max_requests must be a positive number" in refused.stderr
    assert defaults_of({"profiles": {"p": {"url": "u", "max_requests": 2.5}}}, "p", config) == {
        "web": "u",
        "max_requests": 2.5,
    }


def test_a_url_the_http_library_refuses_is_an_error_line(tmp_path: Path) -> None:
    """A host that is no host name (-w https://5) ended in aiohttp's InvalidUrlClientError
    traceback when no login came first; it is a one-line error, exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XNAT_")}
    done = subprocess.run([BIN / "xnat-downloader", "ls", "-w", "https://5", "-p", "P"],
                          capture_output=True, text=True, env={**env, "HOME": str(tmp_path)},
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: request to https://5 failed" in done.stderr


def test_shell_completion_is_generated_from_the_parsers(tmp_path: Path) -> None:
    script = tmp_path / "completion.bash"
    done = subprocess.run([BIN / "xnat-downloader", "--print-completion", "bash"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0
    script.write_text(done.stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(("xnat-downloader", *words))
        probe = (
            f"source {script}; COMP_WORDS=(xnat-downloader {' '.join(words)}); "
            f"COMP_CWORD={len(words)}; COMP_LINE='{line}'; COMP_POINT={len(line)}; "
            '_shtab_xnat_downloader; echo "${COMPREPLY[@]}"'
        )
        result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
        return result.stdout.split()

    assert complete("dicom-s") == ["dicom-send"]
    assert complete("download", "--sha") == ["--shard"]
    assert complete("dicom-send", "--calling") == ["--calling-ae"]


def test_one_command_tree_writes_only_to_the_streams_it_is_given() -> None:
    from xnat_downloader.cli.main import COMMANDS, run

    def call(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = run(list(argv), stdout=out, stderr=err, interactive=False)
        return code, out.getvalue(), err.getvalue()

    code, out, _ = call("--help")
    assert code == 0
    for name in COMMANDS:
        assert name in out  # every command is in the one tree's help
    for name in COMMANDS:
        code, out, err = call(name, "--help")
        assert code == 0, name
        assert out.startswith(f"usage: xnat-downloader {name}"), name
    code, out, err = call("download", "--ouput", "x")
    assert code == 2  # a usage error is a return value, not SystemExit
    assert out == ""
    assert "--ouput: did you mean --output?" in err
    code, out, _ = call("--version")
    assert code == 0
    assert out.startswith("xnat-downloader ")
    code, _, err = call("dicom-send", "--to", "AE@127.0.0.1:9", "-j", "99", __file__)
    assert code == 2
    assert "jobs (-j) must be between 1 and 32, not 99" in err  # checked by the API
    code, out, err = call("status", "--json")
    assert code == 2
    assert json.loads(out) == {
        "ok": False, "error": "the following arguments are required: -o/--output", "exit": 2
    }  # fmt: skip
    assert "required" in err


def test_insecure_is_warned_once_whatever_the_command(
    shared_server: Server, tmp_path: Path
) -> None:
    for argv in (["ls", "-w", shared_server.url, "-p", "DEMO01"],
                 ["xget", "-host", shared_server.url, "-proj", "DEMO01", "-o", str(tmp_path)],
                 ["prearchive", "ls", "-w", shared_server.url]):  # fmt: skip
        code, _, err = cli(*argv, "--insecure")
        assert code == 0, err
        assert err.count("TLS certificate verification is OFF") == 1, argv


def test_ctrl_d_at_the_credentials_prompt_is_an_error_not_a_traceback(
    shared_server: Server, tmp_path: Path
) -> None:
    """On a terminal with no credentials anywhere, the CLI asks; Ctrl-D there (end of input)
    ends the run with one line that says where credentials can come from, exit 2."""
    import pty

    env = {k: v for k, v in os.environ.items() if not k.startswith("XNAT_") and k != "NETRC"}
    env["HOME"] = str(tmp_path)  # no ~/.netrc, no ~/.xnatPass, no profile
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    main, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(BIN / "xnat-downloader"), "download", "-w", shared_server.url, "-p", "DEMO01",
             "-o", str(tmp_path / "out")],
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        os.write(main, b"\x04")  # Ctrl-D: the terminal's end of input
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(main)
        os.close(terminal)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert "no credentials: the prompt for them met the end of input" in err
    assert "XNAT_PASS" in err


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["download", "-p", "DEMO01", "-s", "", "-o", "{out}"], "-s '' names nothing"),
        (["download", "-p", "DEMO01", "--scan-type", " , ", "-o", "{out}"],
         "--scan-type ' , ' names nothing"),
        (["ls", "-p", ""], "-p '' names nothing"),
        (["slurm", "-p", "P", "--subject", "", "-o", "{out}", "--shards", "2"],
         "--subject '' names nothing"),
        (["upload", "-p", "P", "--subject", "", "{file}"], "--subject '' names nothing"),
        (["upload", "-p", "P", "--resource", "", "{file}"], "--resource '' names nothing"),
        (["copy", "--to", "http://127.0.0.1:8", "-p", "P", "--to-project", ""],
         "--to-project '' names nothing"),
        (["download", "-p", "P", "--since", "2024-02-02", "--until", "2024-01-01", "-o", "{out}"],
         "--since 2024-02-02 is after --until 2024-01-01"),
    ],
)  # fmt: skip
def test_a_flag_given_an_empty_value_is_refused_not_taken_as_no_constraint(
    tmp_path: Path, command: list[str], message: str
) -> None:
    """A script's unset variable (`-s "$SESSION"`) must not lift a constraint and select a
    whole project, nor send files to the project instead of a subject: an empty value is a
    usage error, found before any server is asked or anything is written."""
    data = tmp_path / "f.txt"
    data.write_text("x")
    args = [a.format(out=tmp_path / "out", file=data) for a in command]
    server = ["--from" if args[0] == "copy" else "-w", "http://127.0.0.1:9"]  # nothing there
    code, _, err = cli(args[0], *server, *args[1:])
    assert code == 2, err
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "url", ["http://admin:s3cr3tpw@127.0.0.1:9", "admin:s3cr3tpw@127.0.0.1:9/data",
            "http://admin:s3cr3tpw@[::1", "admin:s3cr3tpw@[::1"],
)  # fmt: skip
def test_a_password_in_the_server_url_is_refused_and_never_echoed(tmp_path: Path, url: str) -> None:
    """user:password@host in -w (or XNAT_HOST) was echoed back in every error message and
    never used to log in. It is refused with the way to give credentials, the URL shown
    without its user part; the password appears nowhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XNAT_")}
    for args, extra in ((["-w", url], {}), ([], {"XNAT_HOST": url})):
        done = subprocess.run([BIN / "xnat-downloader", "ls", *args, "-p", "P", "--json"],
                              capture_output=True, text=True, timeout=60,
                              env={**env, **extra, "HOME": str(tmp_path)})  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "s3cr3tpw" not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        if "[" not in url:
            assert "give the user with -u (or XNAT_USER)" in done.stderr


@pytest.mark.parametrize("when", ["before the command", "while its output is flushed"])
def test_sigterm_outside_the_commands_own_handling(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    """SIGTERM before the command has begun (its arguments being read) ends the run as it
    would inside: the line saying how to resume, exit 143.  After the command has finished
    and printed its own last line, only the exit status changes."""
    from xnat_downloader.cli import main as cli_main
    from xnat_downloader.cli.common import Terminated

    def terminated(*args: object, **kwargs: object) -> int:
        raise Terminated("SIGTERM")

    class FlushTerminated(io.StringIO):
        def flush(self) -> None:
            raise Terminated("SIGTERM")

    if when == "before the command":
        monkeypatch.setattr(cli_main, "run", terminated)
    else:
        monkeypatch.setattr(cli_main, "run", lambda *a, **k: 0)
        monkeypatch.setattr("sys.stdout", FlushTerminated())
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert cli_main.main([]) == 143
    finally:
        signal.signal(signal.SIGTERM, handler)  # main() takes SIGTERM over
    lines = capsys.readouterr().err.splitlines()
    if when == "before the command":
        assert lines == ["interrupted: run the same command again to resume"]
    else:
        assert lines == []


def test_slurm_says_how_many_shards_get_no_session(shared_server: Server, tmp_path: Path) -> None:
    """More shards than sessions: the note counts the idle shards in the right number."""
    base = ["slurm", "-w", shared_server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1"]
    for shards, note in (("2", "note: 1 shard gets no session"),
                         ("3", "note: 2 shards get no session")):  # fmt: skip
        code, _, err = cli(*base, "-o", str(tmp_path / shards), "--shards", shards)
        assert code == 0, err
        assert note in err
