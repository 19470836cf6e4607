"""Load the source text's eager ``nn.Module`` classes at test time.

The spec for attnfused's seed-compatible modules is a blog post (DESIGN.md §2) that contains eager
PyTorch classes (``SEBlock``, ``ECABlock``, ``Channel_Attention_Module_FC``,
``Channel_Attention_Module_Conv``, ``Spatial_Attention_Module``, ``CBAMBlock``). None of that code
may be copied into this repository, so the parity tests read it from the source text itself:

- the text lives in ``<repo>/../shared/source/*.txt`` (override the folder with the environment
  variable ``ATTNFUSED_SOURCE_DIR``);
- every top-level ``class X(nn.Module):`` block is taken, from its ``class`` line up to the next
  non-blank line that is not indented (prose, a heading, an ``if __name__ == ...`` block);
- tabs are expanded to 4 columns: the post puts one tab-indented line
  (``\\t\\tself.sigmoid = nn.Sigmoid()`` in ``SEBlock``) inside a class indented with spaces. As
  written that is a ``TabError``; with Python's own 8-column tab stops it is an ``IndentationError``;
  with 4-column stops it lines up with the neighbouring 8-space lines, which is what the author saw;
- the blocks are compiled with their original line numbers (other lines blanked) under the text's
  file name, so a traceback through source code points at the right line of the text, and executed
  in one namespace that has ``math``, ``torch`` and ``torch.nn as nn`` (the imports the post shows).

:func:`load_source_classes` caches its result per folder. A missing folder/file raises
:class:`SourceTextMissing` (a ``FileNotFoundError``) whose message says where it looked; tests turn
that into a skip. Anything else that goes wrong (no class found, code that does not compile) is a
plain error: the text is there, so the tests must not silently skip.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = [
    "SOURCE_DIR_ENV",
    "TAB_SIZE",
    "EXPECTED_CLASSES",
    "SourceTextMissing",
    "default_source_dir",
    "source_files",
    "extract_class_blocks",
    "load_source_classes",
]

SOURCE_DIR_ENV = "ATTNFUSED_SOURCE_DIR"
TAB_SIZE = 4

EXPECTED_CLASSES = (
    "SEBlock",
    "ECABlock",
    "Channel_Attention_Module_FC",
    "Channel_Attention_Module_Conv",
    "Spatial_Attention_Module",
    "CBAMBlock",
)

_CLASS_RE = re.compile(r"class\s+([A-Za-z_]\w*)\s*\(\s*nn\.Module\s*\)\s*:")

_cache: Dict[Path, Dict[str, type]] = {}


class SourceTextMissing(FileNotFoundError):
    """The source text (folder or ``*.txt`` file) is not on this machine."""


def default_source_dir() -> Path:
    """``$ATTNFUSED_SOURCE_DIR`` if set, else ``<repo root>/../shared/source``."""
    env = os.environ.get(SOURCE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    # tests/source_text.py -> parents[0] tests, [1] repo root, [2] the folder holding the repo.
    return Path(__file__).resolve().parents[2] / "shared" / "source"


def source_files(directory: Optional[Path] = None) -> List[Path]:
    """The ``*.txt`` files of the source folder, sorted; :class:`SourceTextMissing` if none."""
    d = Path(directory) if directory is not None else default_source_dir()
    if directory is not None:
        how = "(given explicitly)"
    elif os.environ.get(SOURCE_DIR_ENV):
        how = f"(from ${SOURCE_DIR_ENV})"
    else:
        how = f"(the default; set ${SOURCE_DIR_ENV} to look elsewhere)"
    if not d.is_dir():
        raise SourceTextMissing(f"source text folder {d} does not exist {how}; cannot load the source classes")
    files = sorted(p for p in d.glob("*.txt") if p.is_file())
    if not files:
        raise SourceTextMissing(f"no *.txt source text in {d} {how}; cannot load the source classes")
    return files


def _lines(text: str) -> List[str]:
    # Split on newlines only: str.splitlines would also split on the form feeds, U+2028 etc. that a
    # scraped web page may contain, and shift the line numbers.
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def extract_class_blocks(text: str) -> List[Tuple[str, int, List[str]]]:
    """``(name, first line index, lines)`` for every top-level ``class X(nn.Module):`` block.

    A block runs from its ``class`` line to the line before the next non-blank line that starts in
    column 0. Lines are returned as written (tabs not yet expanded).
    """
    lines = _lines(text)
    blocks = []
    i = 0
    while i < len(lines):
        m = _CLASS_RE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j][0] in " \t"):
            j += 1
        blocks.append((m.group(1), i, lines[i:j]))
        i = j
    return blocks


def _namespace(path: Path) -> dict:
    import torch
    import torch.nn as nn

    return {"__name__": f"source_text.{path.stem}", "math": math, "torch": torch, "nn": nn}


def _load_file(path: Path) -> Dict[str, type]:
    text = path.read_text(encoding="utf-8")
    lines = _lines(text)
    blocks = extract_class_blocks(text)
    if not blocks:
        return {}
    code = [""] * len(lines)
    for _, start, block in blocks:
        code[start:start + len(block)] = [ln.expandtabs(TAB_SIZE) for ln in block]
    ns = _namespace(path)
    exec(compile("\n".join(code) + "\n", str(path), "exec"), ns)  # noqa: S102 - test-time spec loading
    out = {}
    for name, _, _ in blocks:
        cls = ns[name]
        cls._source_text_path = str(path)  # where the class came from, for messages
        out[name] = cls
    return out


def load_source_classes(directory: Optional[Path] = None) -> Dict[str, type]:
    """The source text's ``nn.Module`` classes by name (cached per folder).

    Raises :class:`SourceTextMissing` if the folder or its ``*.txt`` files are missing, and
    ``ValueError`` if two files define the same class differently or no class is found.
    """
    d = (Path(directory) if directory is not None else default_source_dir()).resolve()
    if d in _cache:
        return dict(_cache[d])
    classes: Dict[str, type] = {}
    origin: Dict[str, Path] = {}
    for path in source_files(directory):
        for name, cls in _load_file(path).items():
            if name in classes:
                raise ValueError(f"class {name} is defined in both {origin[name]} and {path}")
            classes[name] = cls
            origin[name] = path
    if not classes:
        raise ValueError(f"no top-level 'class X(nn.Module):' definition found in the *.txt files of {d}")
    _cache[d] = classes
    return dict(classes)


if __name__ == "__main__":  # quick look: python tests/source_text.py
    for n, c in load_source_classes().items():
        print(n, "from", c._source_text_path)
