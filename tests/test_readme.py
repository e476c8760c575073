"""README.md and docs/*.md cannot rot silently. These are docs checks: the full suite runs them,
the fast tier (-m "not slow") does not, so that a homework edit to a script is not failed by a
page that quotes it.

1. Every code link, written [`NAME`](FILE.py), points at an existing file that holds NAME: a
   function or class defined there, a name used there, or the quoted code itself. Links name code,
   never a line number (a line number moves with every edit).
2. Every command in the pages' code (fenced blocks and inline spans) that runs a script,
   `python X.py ...` or `python -m experiments ...`, parses with that script's own parser, and
   nothing runs: a misspelt, abbreviated or out-of-range flag fails, and so does an experiment
   that is not in experiments.EXPERIMENTS.
3. Every in-page anchor (#section) names a heading, and every image exists.
"""
import argparse
import ast
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import os
import re
import shlex
import sys

import pytest

pytestmark = pytest.mark.slow  # docs checks: the full suite, not the fast tier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
sys.path.insert(0, ROOT)
# Every page a reader sees: the README and docs/*.md, as paths relative to the repository root.
PAGES = ["README.md"] + sorted(f"docs/{n}" for n in os.listdir(os.path.join(ROOT, "docs"))
                               if n.endswith(".md"))

CODE_LINK = re.compile(r"\[`([^`]+)`\]\(([\w./-]+\.py)(#[^)]*)?\)")
LINE_NUMBER = re.compile(r"\.py#L\d+")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def read_readme() -> str:
    with open(README) as f:
        return f.read()


def read_page(page: str) -> str:
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def resolve(page: str, path: str) -> str:
    """A link's target relative to the repository root (links are relative to their page)."""
    return os.path.normpath(os.path.join(os.path.dirname(page), path))


# ---------------------------------------------------------------------------------- code links
def source_text(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def defined_names(path: str) -> set[str]:
    """Every function, class and assigned name in the file."""
    names = set()
    for node in ast.walk(ast.parse(source_text(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def link_problems(text: str, page: str = "README.md") -> list[str]:
    """Everything wrong with a page's code links, one message each."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{page} line {number}"
        for m in LINE_NUMBER.finditer(line):
            problems.append(f"{where}: {m.group(0)}: link to the file and name the code, not a line")
        for m in CODE_LINK.finditer(line):
            name, link_path, anchor = m.groups()
            path = resolve(page, link_path)
            if anchor:
                problems.append(f"{where}, {m.group(0)}: no #anchor: the name in backticks says where")
            if not os.path.isfile(os.path.join(ROOT, path)):
                problems.append(f"{where}, {m.group(0)}: {path} does not exist")
                continue
            source = source_text(path)
            if IDENTIFIER.fullmatch(name):
                found = name in defined_names(path) or re.search(rf"\b{name}\b", source)
            else:  # quoted code: it must be in the file, whatever its layout
                found = " ".join(name.split()) in " ".join(source.split())
            if not found:
                problems.append(f"{where}, {m.group(0)}: `{name}` is not in {path}")
    return problems


def test_code_links_point_at_their_code():
    pages = {page: read_page(page) for page in PAGES}
    assert any(CODE_LINK.search(text) for text in pages.values()), \
        "no page has code links: did the pattern change?"
    problems = [p for page, text in pages.items() for p in link_problems(text, page)]
    assert not problems, "stale code links:\n" + "\n".join(problems)


def test_link_check_catches_a_stale_link():
    assert not link_problems("[`compute_grpo_clip_loss`](grpo.py)")
    assert not link_problems("[`ratio = importance_ratio(`](grpo.py)")
    assert link_problems("[`no_such_code_anywhere`](grpo.py)")
    assert link_problems("[`x`](nope.py)")
    assert link_problems("`compute_grpo_clip_loss` [grpo.py#L1-L3](grpo.py#L1-L3)")  # a line number
    assert link_problems("[`compute_grpo_clip_loss`](grpo.py#L12)")


# ---------------------------------------------------------------------------------- commands
def code_spans(text: str) -> list[tuple[int, str]]:
    """(README line, code) for every fenced block (one line per entry) and inline code span."""
    spans, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            spans.append((number, line))
        else:
            spans += [(number, s) for s in re.findall(r"`([^`]+)`", line)]
    # join fenced lines continued with a backslash
    joined = []
    for number, code in spans:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + code)
        else:
            joined.append((number, code))
    return joined


def script_commands(text: str) -> list[tuple[int, str, list[str]]]:
    """(README line, script, argv) for every `python X.py ...` in the README's code, and for every
    `python -m PACKAGE ...` of a package of this repository (script: "-m PACKAGE")."""
    commands = []
    for number, code in code_spans(text):
        for part in re.split(r"&&|\|\||;|\|", code):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            while words and (re.fullmatch(r"\w+=\S*", words[0]) or words[0] == "env"):
                words = words[1:]  # environment variables before the command
            if len(words) >= 2 and words[0] in ("python", "python3") and words[1].endswith(".py"):
                commands.append((number, words[1], words[2:]))
            elif (len(words) >= 3 and words[0] in ("python", "python3") and words[1] == "-m"
                  and os.path.isfile(os.path.join(ROOT, words[2], "__main__.py"))):
                commands.append((number, f"-m {words[2]}", words[3:]))
    return commands


class _Parsed(Exception):
    """Raised by the patched parse_args to stop a script's main right after parsing."""


def check_command(script: str, argv: list[str]) -> None:
    """Parse argv with the script's own parser without running anything; AssertionError if it fails.
    script is a file, "X.py", or a package run with -m, "-m PACKAGE" (its __main__.py)."""
    package = script[3:] if script.startswith("-m ") else None
    path = os.path.join(ROOT, package, "__main__.py") if package else os.path.join(ROOT, script)
    if script == "bench.py" and not os.path.exists(path):
        pytest.skip("bench.py does not exist yet: its README commands cannot be checked")
    assert os.path.isfile(path), f"{script} does not exist"
    module = importlib.import_module(f"{package}.__main__" if package else script[:-3])
    uses_config = dataclasses.is_dataclass(getattr(module, "Config", None))
    # Only scripts whose main builds an argparse parser first may be called: anything else would run.
    assert uses_config or script in ("gae.py", "-m experiments", "export_hf.py", "compare.py"), \
        f"{script}: no Config dataclass; teach tests/test_readme.py how to parse its flags"
    parsers, original = [], argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        parsers.append(self)
        parsed = original(self, args, namespace)
        if not uses_config:
            raise _Parsed(parsed)  # gae.main, experiments' and export_hf's main: stop before run
        return parsed

    out, namespace = io.StringIO(), None
    wants_help = any(a in ("-h", "--help") for a in argv)
    argparse.ArgumentParser.parse_args = parse_args
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if uses_config:
                import runs
                runs.parse_config(module.Config, list(argv))
            else:
                module.main(list(argv))
    except _Parsed as done:
        namespace = done.args[0]
    except SystemExit as e:
        assert e.code == 0 and wants_help, f"python {script} {' '.join(argv)}: {out.getvalue().strip()}"
    finally:
        argparse.ArgumentParser.parse_args = original
    assert parsers, f"{script} never parsed its arguments"
    known = parsers[-1]._option_string_actions
    for word in argv:  # argparse accepts unambiguous abbreviations: the README must spell flags out
        flag = word.split("=", 1)[0]
        if word.startswith("-") and not re.fullmatch(r"-\d.*", word):
            assert flag in known, f"python {script} {' '.join(argv)}: {flag} is not a flag of {script}"
    if script == "-m experiments" and namespace is not None and namespace.name is not None:
        assert namespace.name in module.EXPERIMENTS, f"{namespace.name} is not in experiments.EXPERIMENTS"


COMMANDS = [(f"{page} L{n}", s, a) for page in PAGES for n, s, a in script_commands(read_page(page))]


def test_readme_has_commands():
    assert {script for _, script, _ in COMMANDS} >= {"sft.py", "grpo.py", "dpo.py", "ppo.py", "gae.py",
                                                     "-m experiments"}


@pytest.mark.parametrize("script, argv", [(s, a) for _, s, a in COMMANDS],
                         ids=[f"{n}: python {s} {' '.join(a)}".strip() for n, s, a in COMMANDS])
def test_readme_command_parses(script, argv):
    check_command(script, argv)


@pytest.mark.parametrize("command", [
    "python sft.py --stesp 300",                  # misspelt
    "python sft.py --step 300",                   # abbreviated: argparse would accept it
    "python grpo.py --lr_schedul constant",
    "python grpo.py --cliprange_high 0.1",        # out of range: below --cliprange
    "python dpo.py --nll_weight -1",
    "python ppo.py --no-whiten_advantage",
    "python gae.py --episode 200",
    "python -m experiments no_such_experiment",
    "python -m experiments --lsit",
    "python -m experiments gae_lambda --quik",
])
def test_command_check_catches_a_bad_command(command):
    (_, script, argv), = script_commands(f"`{command}`")
    with pytest.raises(AssertionError):
        check_command(script, argv)


# ---------------------------------------------------------------------------------- anchors
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def link_target_problems(text: str, page: str) -> list[str]:
    """Every relative link and image of a page must name an existing file, and its #anchor a
    heading of that page (code links' #Lx-Ly are checked by the code-link test)."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        for target in MD_LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            file = resolve(page, path) if path else page
            if not os.path.exists(os.path.join(ROOT, file)):
                problems.append(f"{page} line {number}: {target}: {file} does not exist")
            elif anchor and file.endswith(".md") and anchor not in headings(read_page(file)
                                                                             if file != page else text):
                problems.append(f"{page} line {number}: #{anchor} names no heading of {file}")
    return problems


def test_links_and_images_resolve():
    problems = [p for page in PAGES for p in link_target_problems(read_page(page), page)]
    assert not problems, "\n".join(problems)


def test_link_target_check_catches_a_bad_link():
    assert link_target_problems("[x](docs/no_such_page.md)", "README.md")
    assert link_target_problems("[x](docs/grpo.md#no-such-heading)", "README.md")
    assert link_target_problems("# A\n[x](#b)", "README.md")
    assert link_target_problems("![f](no_such.png)", "docs/grpo.md")
    assert not link_target_problems("# A\n[x](#a) [y](../grpo.py)", "docs/grpo.md")


# ---------------------------------------------------------------------------------- figures
def caption_problems(text: str, page: str) -> list[str]:
    """Each embedded figure is followed (after a blank line at most) by one caption line that
    names, in backticks, the command that drew it, and says what to look at after a colon."""
    problems, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"\s*!\[[^\]]*\]\([^)]+\.png\)\s*$", line):
            continue
        rest = [l for l in lines[i + 1:i + 3] if l.strip()]
        caption = rest[0] if rest else ""
        if not re.search(r"`(python3?|bash) [^`]+`[^:]*:\s*\S", caption):
            problems.append(f"{page} line {i + 1}: the figure needs a caption line under it: "
                            "`the command`: what to look at")
    return problems


def test_every_figure_has_a_caption():
    problems = [p for page in PAGES for p in caption_problems(read_page(page), page)]
    assert not problems, "\n".join(problems)


def test_caption_check_catches_a_bare_figure():
    assert caption_problems("![c](docs/grpo_curves.png)\n\nSome text.\n", "README.md")
    assert caption_problems("![c](docs/grpo_curves.png)\n", "README.md")
    assert not caption_problems("![c](a.png)\n\n`python grpo.py`: accuracy rises.\n", "x.md")


# ---------------------------------------------------------------------------------- shape
def test_readme_is_short():
    n = len(read_readme().splitlines())
    assert n <= 300, f"README.md has {n} lines; at most 300 (move detail to docs/)"


# The docs describe the software as it is: no project history a reader cannot see or use.
HISTORY = re.compile(r"\bissues? #?\d+|\bbefore (?:issue|version|the fix)|\bsessions?\b"
                     r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b|xeon \d+|model 207"
                     r"|\b(?:target|targets)\b[^.]*\b(?:not )?met\b|\bnot met\b"
                     r"|no gpu machine was lent|\bcommit [0-9a-f]{5,}", re.I)


def history_problems(text: str, page: str) -> list[str]:
    return [f"{page} line {n}: {m.group(0)!r} is project history"
            for n, line in enumerate(text.splitlines(), 1) for m in HISTORY.finditer(line)]


def test_no_history_in_the_docs():
    problems = [p for page in PAGES for p in history_problems(read_page(page), page)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text", ["as before issue 16", "see issue 7", "in commit bc4eb54",
                                  "on the Xeon 207", "the target was not met",
                                  "measured in an earlier session", "no GPU machine was lent"])
def test_history_check_catches_history(text):
    assert history_problems(text, "x.md")


# ---------------------------------------------------------------------------------- numbers
def render_module():
    spec = importlib.util.spec_from_file_location("render", os.path.join(ROOT, "docs", "render.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_blocks_are_up_to_date():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = render_module().main(["--check"])
    assert code == 0, out.getvalue()


def test_render_check_catches_a_stale_block(tmp_path, monkeypatch):
    render = render_module()
    page = tmp_path / "README.md"
    page.write_text("<!-- results:defaults -->\n| `python sft.py` | 1 s | 0 | 0.999 |\n"
                    "<!-- /results -->\n")
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(render, "ROOT", tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        assert render.main(["--check"]) == 1
    assert "0.999" in page.read_text()  # --check rewrites nothing


# Pages whose every run or experiment number sits in a generated block (docs/render.py).
NUMBERS_FROM_RESULTS = ["README.md"]
BLOCKS = re.compile(r"<!-- results:[\w-]+ -->.*?<!-- /results -->", re.S)
QUOTED_NUMBER = re.compile(r"\b0\.\d{2,}\b|\b\d+(?:\.\d+)? ?(?:s|min|minutes|seconds)\b")


def number_problems(text: str, page: str) -> list[str]:
    """An accuracy-like 0.xx or a time outside a generated block or a code span goes stale."""
    text = BLOCKS.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in QUOTED_NUMBER.finditer(re.sub(r"`[^`]*`", "", line)):
            problems.append(f"{page}: {m.group(0)!r} in {line.strip()[:60]!r}: quote numbers in a "
                            "generated block (docs/render.py)")
    return problems


def test_run_numbers_come_from_the_results():
    problems = [p for page in NUMBERS_FROM_RESULTS for p in number_problems(read_page(page), page)]
    assert not problems, "\n".join(problems)


def test_number_check_catches_a_quoted_number():
    assert number_problems("GRPO reaches 0.924 in 346 s.", "x.md")
    assert number_problems("it takes 6 minutes", "x.md")
    assert not number_problems("<!-- results:x -->\n0.924, 346 s\n<!-- /results -->\n", "x.md")
    assert not number_problems("`--lr 0.0001` and `--steps 30s`", "x.md")
