"""The docs are executable: every Python and shell sample in README.md and docs/ runs, every link resolves.

How it works:

- Fenced blocks are read from README.md and docs/**/*.md (docs/design/ is the
  metric contract, prose only, and is not run).
- ``python`` blocks run as scripts (``sys.executable``, repository root as the
  working directory) with a timeout: samples are complete, bounded programs.
- ``sh``/``bash``/``shell`` blocks run with ``bash -euo pipefail`` in the
  repository root, against a demo exporter this module starts on a free
  loopback port. Samples address it as ``${CLARY_URL:-http://127.0.0.1:25279}``,
  which is what ``make run`` serves, and the test sets ``CLARY_URL``. Samples
  that start a server of their own listen on ``${PORT:-25280}``; the test sets
  ``PORT`` to another free port. ``TMPDIR`` and ``HOME`` point into the test's
  temporary directory.
- README's two commands (``make run``, ``make test``) are not run (the second
  is this suite): the test checks they are README's first two blocks, exactly
  those commands, and that the Makefile has both targets.
- A block preceded by ``<!-- not-run: <reason> -->`` is not run (a docker
  engine, a server that runs until Ctrl-C); the reason is required.
- ``json`` and ``yaml`` blocks must parse; ``text``, ``console`` and the other
  output/config tags are not run. A ``console`` block must not hold ``$ ``
  prompts (commands a reader would copy belong in ``sh`` blocks). A fence
  without a tag fails.

A failing sample fails with its file, line, exit code and output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DESIGN = DOCS / "design"
LOOPBACK = "127.0.0.1"

README_MAX_LINES = 200
PYTHON_TIMEOUT = 90
SHELL_TIMEOUT = 120
EXPORTER_START_TIMEOUT = 60

RUN_PYTHON = {"python"}
RUN_SHELL = {"sh", "bash", "shell"}
PARSE = {"json", "yaml"}
NOT_RUN = {"text", "console", "yaml", "json", "promql", "ini", "toml", "csv", "http", "diff"}
README_COMMANDS = ("make run", "make test")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_NOT_RUN_MARK = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when marked <!-- not-run: ... -->

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_pages() -> list[Path]:
    """README.md and docs/**/*.md except docs/design/: the pages whose samples run."""
    pages = [p for p in sorted(DOCS.rglob("*.md")) if DESIGN not in p.parents]
    return [README, *pages]


def linked_pages() -> list[Path]:
    """Every markdown file whose relative links must resolve."""
    extra = [ROOT / "benchmarks" / "README.md", ROOT / "CHANGELOG.md", *sorted(DESIGN.rglob("*.md"))]
    return [*doc_pages(), *(p for p in extra if p.exists())]


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        lang = match["info"].strip().split(" ")[0].lower() if match["info"].strip() else ""
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            if closing and closing["fence"][0] == fence[0] and len(closing["fence"]) >= len(fence) \
                    and not closing["info"].strip():
                break
            body.append(lines[i])
            i += 1
        else:
            raise AssertionError(f"{path.relative_to(ROOT)}:{start + 1}: fence never closed")
        i += 1
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = _NOT_RUN_MARK.match(previous)
        code = textwrap.dedent("\n".join(line[indent:] if line[:indent].strip() == "" else line for line in body))
        found.append(Block(path, start + 1, lang, code + "\n", mark["reason"] if mark else None))
    return found


def all_blocks() -> list[Block]:
    return [b for page in doc_pages() for b in blocks(page)]


def _readme_commands(block: Block) -> bool:
    return block.path == README and block.code.strip() in README_COMMANDS


def runnable(langs: set[str]) -> list[Block]:
    return [b for b in all_blocks() if b.lang in langs and b.not_run is None and not _readme_commands(b)]


PYTHON_BLOCKS = runnable(RUN_PYTHON)
SHELL_BLOCKS = runnable(RUN_SHELL)


# --- structure ------------------------------------------------------------------------------

def test_every_block_is_tagged_with_a_known_language():
    problems = [f"{b.where}: fence without a language tag" for b in all_blocks() if not b.lang]
    problems += [f"{b.where}: unknown tag {b.lang!r} (run: python, sh; not run: {', '.join(sorted(NOT_RUN))})"
                 for b in all_blocks() if b.lang and b.lang not in RUN_PYTHON | RUN_SHELL | NOT_RUN]
    assert not problems, "\n".join(problems)


def test_not_run_blocks_say_why_and_only_commands_are_marked():
    marked = [b for b in all_blocks() if b.not_run is not None]
    problems = [f"{b.where}: <!-- not-run: --> needs a reason" for b in marked if not b.not_run]
    problems += [f"{b.where}: <!-- not-run --> on a {b.lang} block (only sh/python blocks run anyway)"
                 for b in marked if b.lang not in RUN_PYTHON | RUN_SHELL]
    assert not problems, "\n".join(problems)
    # Few by design: everything a reader copies is run unless it truly cannot run here.
    assert len(marked) <= 6, [f"{b.where}: {b.not_run}" for b in marked]


def test_console_blocks_hold_no_commands_to_copy():
    problems = [f"{b.where}: `$ ` prompt in a console block; put commands in an sh block"
                for b in all_blocks() if b.lang == "console"
                for line in b.code.splitlines() if line.lstrip().startswith("$ ")]
    assert not problems, "\n".join(problems)


def test_no_shell_sample_pipes_into_a_reader_that_stops_early():
    """``curl ... | grep -q`` fails at random under pipefail: grep exits at the first match, curl's next
    write gets EPIPE and curl exits 23 (CI failed on docs/privacy.md this way). Samples grep a captured
    body instead (``grep -q x <<<"$(curl ...)"``)."""
    early = re.compile(r"\|\s*(grep\s+(-\w*q|--quiet|-m\s*\d|--max-count)|head\b)")
    problems = [f"{b.where}: {line.strip()}" for b in SHELL_BLOCKS
                for line in b.code.replace("\\\n", " ").splitlines() if early.search(line)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", [b for b in all_blocks() if b.lang in PARSE], ids=lambda b: b.where)
def test_json_and_yaml_blocks_parse(block: Block):
    try:
        if block.lang == "json":
            json.loads(block.code)
        else:
            yaml.safe_load(block.code)
    except (ValueError, yaml.YAMLError) as exc:
        pytest.fail(f"{block.where}: {block.lang} block does not parse: {exc}\n{block.code}")


def test_readme_starts_with_the_two_commands_and_the_makefile_has_them():
    readme = blocks(README)
    assert [b.code.strip() for b in readme[:2]] == list(README_COMMANDS), (
        f"README's first two blocks must be exactly {README_COMMANDS}, found "
        f"{[b.code.strip() for b in readme[:2]]}")
    assert all(b.lang in RUN_SHELL for b in readme[:2])
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "help"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target} target"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it under {README_MAX_LINES}, move detail to docs/"


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text(encoding="utf-8")
    missing = [p.relative_to(ROOT).as_posix() for p in doc_pages()[1:]
               if f"({p.relative_to(ROOT).as_posix()}" not in text]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def test_there_are_samples_to_run():
    # A parser regression must not turn into "nothing to run, all green".
    assert len(PYTHON_BLOCKS) >= 5, [b.where for b in PYTHON_BLOCKS]
    assert len(SHELL_BLOCKS) >= 15, [b.where for b in SHELL_BLOCKS]


# --- links ----------------------------------------------------------------------------------

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def github_slug(heading: str, seen: dict[str, int]) -> str:
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    slug = text.replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            found.add(github_slug(m[1].replace("`", ""), seen))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for m in _LINK.finditer(_INLINE_CODE.sub("", line)):
            found.append((number, m[1]))
    return found


@pytest.mark.parametrize("page", linked_pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path):
    problems = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.relative_to(ROOT)}:{line}: {target}"
        if not resolved.exists():
            problems.append(f"{where}: no such file")
        elif ROOT not in resolved.parents and resolved != ROOT:
            problems.append(f"{where}: points outside the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not problems, "\n".join(problems)


# --- running the samples ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _exporter_command() -> list[str]:
    script = Path(sys.executable).with_name("clary-exporter")  # what `make run` starts
    return [str(script)] if script.exists() else [sys.executable, "-m", "exporter.cli"]


@pytest.fixture(scope="module")
def demo_exporter(tmp_path_factory):
    """The demo exporter, as `make run` starts it, on a free loopback port; stopped afterwards."""
    workdir = tmp_path_factory.mktemp("docs-exporter")
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    log_path = workdir / "exporter.log"
    env = {**os.environ, "CLARY_DATA_DIR": str(workdir / "data")}
    for name in [k for k in env if k.startswith("CLARY_") and k != "CLARY_DATA_DIR"]:
        del env[name]  # the reader's `make run` has none of these either
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*_exporter_command(), "--demo", "--demo-duration", "600", "--listen-address", f"{LOOPBACK}:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=workdir)
        try:
            deadline = time.monotonic() + EXPORTER_START_TIMEOUT
            while _status(f"{url}/readyz") != 200:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"demo exporter did not come up on {url}:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _venv_ready() -> None:
    venv_bin = ROOT / ".venv" / "bin"
    if not (venv_bin / "clary-exporter").exists():
        pytest.fail("the samples use .venv/bin/ as a reader has it after `make run`; run the suite with `make test`")


def run_block(block: Block, command: list[str], env: dict[str, str], timeout: float) -> None:
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{block.where}: {block.lang} sample ran past {timeout}s\n--- output ---\n"
                    f"{output.decode(errors='replace')[-4000:]}\n--- sample ---\n{block.code}")
    finally:
        # Anything the sample left running in the background (it should not) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode != 0:
        pytest.fail(f"{block.where}: {block.lang} sample exited with {proc.returncode}\n--- output ---\n"
                    f"{output.decode(errors='replace')[-4000:]}\n--- sample ---\n{block.code}", pytrace=False)


def sample_env(tmp_path: Path, url: str) -> dict[str, str]:
    home = tmp_path / "home"
    tmp = tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARY_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(CLARY_URL=url, PORT=str(free_port()), HOME=str(home), TMPDIR=str(tmp),
               PYTHONDONTWRITEBYTECODE="1")
    return env


@pytest.mark.e2e
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_sample_runs(block: Block, demo_exporter: str, tmp_path: Path):
    script = tmp_path / f"sample_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    run_block(block, [sys.executable, str(script)], sample_env(tmp_path, demo_exporter), PYTHON_TIMEOUT)


@pytest.mark.e2e
@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.where)
def test_shell_sample_runs(block: Block, demo_exporter: str, tmp_path: Path):
    _venv_ready()
    script = tmp_path / f"sample_{block.line}.sh"
    script.write_text(block.code, encoding="utf-8")
    run_block(block, ["bash", "-euo", "pipefail", str(script)], sample_env(tmp_path, demo_exporter), SHELL_TIMEOUT)
