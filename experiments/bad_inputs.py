"""Bad inputs, tried as a user would: every reader, every CLI command, every saved artefact.

A reproducible sweep for issue 18. It builds its own small inputs in a temporary folder (the
embedded synthetic data, a patch cache, two tiny models trained for one epoch, a prediction),
then tries each bad input (``bad_inputs_cases.py``, ``bad_inputs_cases_more.py``) in a fresh
subprocess with a timeout, and records: the exit status (CLI) or the exception type (API),
whether a traceback was printed, the first line of the message, and a verdict:

- ``OK``: a CLI command exits with status 2 and one ``PROG: error: ...`` line that names the file
  or argument (argparse's own usage errors count); an API call raises a documented type
  (``MclstexpError``, ``OSError``, ``ValueError``, ``TypeError``) naming the file or argument;
  a case that must succeed (e.g. a damaged cache repaired on rerun) succeeds and passes its check;
- ``DEFECT``: a traceback for a user error, a hang, a crash, a silent success where an error was
  due, a message that does not name what is wrong, or code run from a file (marker created).

Run (about 8 minutes on 2 shared cores; `--only TEXT` for a subset)::

    PYTHONPATH=python nice -n 10 python experiments/bad_inputs.py --out runs/bad_inputs.md

It writes the markdown table to ``--out`` and the records to the same name with ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent / "python"
TRACEBACK = "Traceback (most recent call last)"
DOCUMENTED = ("MclstexpError", "OSError", "ValueError", "TypeError")

# An API case runs this wrapper: the case's code is exec'd, the outcome printed as one JSON line.
_API_WRAPPER = r"""
import json, sys
from mclstexp.exceptions import MclstexpError
try:
    exec(compile(sys.argv[1], "<case>", "exec"), {"__name__": "__case__"})
    out = {"raised": None}
except BaseException as err:
    ok = isinstance(err, (MclstexpError, OSError, ValueError, TypeError))
    out = {"raised": type(err).__name__, "documented": ok, "msg": str(err)}
print("BAD-INPUT-RESULT " + json.dumps(out))
"""
_TILE = "import sys; from mclstexp.cli.tile import main; sys.exit(main())"


@dataclass
class Case:
    """One bad input: a CLI command line (``argv``) or API code (``code``) run in ``work``."""

    name: str
    group: str
    argv: list[str] | None = None
    code: str | None = None
    expect: str = "error"  # "error", "ok" or "any" (exit 0 or a clean error)
    names: str | None = None  # text the message must contain (file or argument)
    setup: Callable[[], None] | None = None
    check: Callable[[], str | None] | None = None  # a problem after the run, or None
    timeout: float = 90.0


@dataclass
class Outcome:
    case: str
    group: str
    command: str
    status: str
    traceback: bool
    message: str
    verdict: str
    why: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _command(case: Case) -> tuple[list[str], str]:
    if case.argv is not None:
        if case.argv[0] == "mclstexp-tile":
            return [sys.executable, "-c", _TILE, *case.argv[1:]], " ".join(case.argv)
        return [sys.executable, "-m", "mclstexp", *case.argv], "mclstexp " + " ".join(case.argv)
    assert case.code is not None
    lines = [ln for ln in case.code.strip().splitlines() if not ln.startswith(("from ", "import "))]
    return [sys.executable, "-c", _API_WRAPPER, case.code], "; ".join(lines)


def _first_message(stderr: str, stdout: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error:" in ln:
            return ln
    if lines:
        return lines[-1]
    out = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    return out[-1] if out else ""


def run_case(case: Case, work: Path) -> Outcome:
    """Run ``case`` in a subprocess (cwd ``work``) and judge it."""
    if case.setup is not None:
        case.setup()
    cmd, shown = _command(case)
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR), MCLSTEXP_DEBUG="")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, text=True, timeout=case.timeout
        )
    except subprocess.TimeoutExpired:
        secs = time.perf_counter() - start
        return Outcome(case.name, case.group, shown, "timeout", False, "", "DEFECT", "hang", secs)
    secs = time.perf_counter() - start
    problem = case.check() if case.check is not None else None
    if case.code is not None:
        out = _judge_api(case, shown, proc, problem)
    else:
        out = _judge_cli(case, shown, proc, problem)
    out.seconds = secs
    return out


def _judge_cli(case: Case, shown: str, proc: subprocess.CompletedProcess, problem) -> Outcome:
    tb = TRACEBACK in proc.stderr
    msg = _first_message(proc.stderr, proc.stdout)
    rc = proc.returncode
    verdict, why = "OK", ""
    if rc < 0:
        verdict, why = "DEFECT", f"killed by signal {-rc}"
    elif tb:
        verdict, why = "DEFECT", "traceback"
    elif problem:
        verdict, why = "DEFECT", problem
    elif case.expect == "ok" and rc != 0:
        verdict, why = "DEFECT", "failed where it should succeed"
    elif case.expect == "error" and rc == 0:
        verdict, why = "DEFECT", "silent success"
    elif case.expect in ("error", "any") and rc not in (0, 2):
        verdict, why = "DEFECT", f"exit status {rc}, not 2"
    elif rc == 2 and case.names and case.names.lower() not in msg.lower():
        verdict, why = "DEFECT", f"message does not name {case.names!r}"
    return Outcome(case.name, case.group, shown, str(rc), tb, msg, verdict, why)


def _judge_api(case: Case, shown: str, proc: subprocess.CompletedProcess, problem) -> Outcome:
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BAD-INPUT-RESULT ")), None)
    if proc.returncode != 0 or line is None:
        msg = _first_message(proc.stderr, proc.stdout)
        why = f"process died (status {proc.returncode})"
        return Outcome(case.name, case.group, shown, str(proc.returncode), True, msg, "DEFECT", why)
    res = json.loads(line.split(" ", 1)[1])
    raised = res["raised"]
    msg = " ".join(str(res.get("msg", "")).split())
    verdict, why = "OK", ""
    if problem:
        verdict, why = "DEFECT", problem
    elif raised == "AssertionError":
        verdict, why = "DEFECT", "wrong result"
    elif raised is None and case.expect == "error":
        verdict, why = "DEFECT", "silent success"
    elif raised is not None and case.expect == "ok":
        verdict, why = "DEFECT", "failed where it should succeed"
    elif raised is not None and not res["documented"]:
        verdict, why = "DEFECT", f"undocumented exception type {raised}"
    elif raised is not None and case.names and case.names.lower() not in msg.lower():
        verdict, why = "DEFECT", f"message does not name {case.names!r}"
    status = raised or "returned"
    return Outcome(case.name, case.group, shown, status, False, msg, verdict, why)


def _cell(text: str, width: int = 100) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a markdown table, one row per case."""
    rows = [
        "| # | group | case | command / API | exit / exception | traceback | message | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, o in enumerate(outcomes, 1):
        verdict = o.verdict + (f" ({o.why})" if o.why else "")
        cmd = _cell(o.command, 90).replace("`", "'")
        rows.append(
            f"| {i} | {o.group} | {_cell(o.case, 60)} | `{cmd}` | {o.status} | "
            f"{'yes' if o.traceback else 'no'} | {_cell(o.message)} | {verdict} |"
        )
    n_bad = sum(o.verdict != "OK" for o in outcomes)
    rows.append("")
    rows.append(f"{len(outcomes)} cases, {len(outcomes) - n_bad} OK, {n_bad} DEFECT.")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bad_inputs.md"))
    parser.add_argument("--only", help="run the cases whose group or name contains this text")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PYTHON_DIR))
    sys.path.insert(0, str(HERE))
    from bad_inputs_cases import all_cases
    from bad_inputs_fixtures import build_fixtures

    work = Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    start = time.perf_counter()
    build_fixtures(work, PYTHON_DIR)
    print(f"fixtures in {work} ({time.perf_counter() - start:.0f} s)", flush=True)
    cases = [
        c for c in all_cases(work) if not args.only or args.only in c.group or args.only in c.name
    ]
    outcomes = []
    for case in cases:
        out = run_case(case, work)
        outcomes.append(out)
        print(f"{out.verdict:6} {out.seconds:5.1f}s {case.group}: {case.name}", flush=True)
    text = table(outcomes)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    records = [o.__dict__ for o in outcomes]
    args.out.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"{len(cases)} cases in {time.perf_counter() - start:.0f} s; table: {args.out}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
