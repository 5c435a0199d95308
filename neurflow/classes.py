"""Class names and ids: where a model's class names come from, and how text and folders find a class.

A class is always the *model's* class index.  Names matter because users (and their data sets)
say "espresso" or ``n07920052``, not 967, and because an ImageFolder data set's sub-folders must
be matched to the model's classes by what they are called, never by their sorted position (a
folder of cat photos was once stored as "goldfish": sub-folder 1 of 4 was taken as class 1).

* Names come from the model (Fashion-MNIST's ten for fashion-cnn, torchvision's ImageNet-1k
  categories for 1000-class ImageNet models: they ship in torchvision's code), from a class-names
  file (`read_class_names`: one name per line, or JSON), or, for a model that has none, from the
  data set (see `neurflow.datasets`).
* ImageNet synset ids (WordNet noun ids such as ``n01440764``, the folder names of the ILSVRC-2012
  release) ship with the package (`imagenet_synsets`, neurflow/data/imagenet_synsets.txt, in
  class-index order) so folders named by synset id match without a download.
* `ClassNames.find` resolves one text to a class: synset id, then the exact name, then the name
  compared case-insensitively with spaces, underscores, hyphens, slashes and other punctuation
  ignored (so ``T-shirt_top`` or ``tshirt top`` is Fashion-MNIST's "T-shirt/top", whose slash
  cannot be in a folder name).  Two classes with the same normalised name (ImageNet's "Cardigan"
  the corgi and "cardigan" the sweater) make a non-exact spelling ambiguous: an error that
  names both and their ids.
* `select_classes` reads ``--classes`` / ``--class``: indices, ranges (``0-9``), names and
  ``all``, separated by commas.
* `match_folders` maps an ImageFolder's sub-folders to classes: an unmatched sub-folder is an
  error that lists close matches (`difflib`), two sub-folders of one class are an error too.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from neurflow.errors import NeurflowInputError
from neurflow.errors import option as spelled

SYNSETS_FILE = Path(__file__).resolve().parent / "data" / "imagenet_synsets.txt"
_SYNSET = re.compile(r"n\d{8}")
_INDEX = re.compile(r"-?\d+")
_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")


def normalise(name: str) -> str:
    """The form names are compared in: case-folded, every run of non-alphanumerics dropped.

    Folder names cannot hold a slash and people write spaces, underscores and hyphens
    interchangeably, so "T-shirt/top", "T-shirt_top" and "tshirt top" are one name."""
    return re.sub(r"[\W_]+", "", str(name).casefold())


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k (ILSVRC-2012) synset ids in class-index order (sorted, as torchvision
    numbers them): shipped as package data because nothing may be downloaded."""
    ids = tuple(SYNSETS_FILE.read_text(encoding="ascii").split())
    if len(ids) != 1000 or not all(_SYNSET.fullmatch(i) for i in ids):  # pragma: no cover - packaging error
        raise RuntimeError(f"{SYNSETS_FILE} is damaged: expected 1000 synset ids, found {len(ids)}")
    return ids


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """torchvision's ImageNet-1k class names (they ship in its code; no download), or () without it."""
    try:
        from torchvision.models._meta import _IMAGENET_CATEGORIES
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return ()
    return tuple(_IMAGENET_CATEGORIES) if len(_IMAGENET_CATEGORIES) == 1000 else ()


def placeholder_names(n: int) -> list[str]:
    """What a class is called when nothing names it."""
    return [f"class {i}" for i in range(n)]


# ------------------------------------------------------------------------- class-name files
def read_class_names(path: str | Path) -> tuple[list[str], list[str]]:
    """`(names, ids)` from a class-names file, in class-index order (`ids` empty when it has none).

    Accepted: one name per line (blank lines skipped); a JSON list of names; a JSON object
    ``{"0": "tench", ...}``, Keras' ``{"0": ["n01440764", "tench"], ...}`` (id and name), or
    torchvision ImageFolder's ``class_to_idx`` ``{"tench": 0, ...}``.  Indices must be 0..n-1,
    each once.  Anything else is a `NeurflowInputError` saying which form to use."""
    path = Path(path).expanduser()
    forms = "one name per line, a JSON list, or a JSON object {index: name}"
    if not path.is_file():
        raise NeurflowInputError(f"class-names file {path} not found" if not path.exists() else f"class-names path {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise NeurflowInputError(f"class-names file {path} is not UTF-8 text: write {forms}") from None
    if text.lstrip().startswith(("[", "{")):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NeurflowInputError(f"class-names file {path} is not valid JSON ({exc.msg} at line {exc.lineno}): write {forms}") from None
        names, ids = _names_from_json(obj, path, forms)
    else:
        names, ids = [line.strip() for line in text.splitlines() if line.strip()], []
    if not names:
        raise NeurflowInputError(f"class-names file {path} lists no class names: write {forms}")
    return names, ids


def _names_from_json(obj: object, path: Path, forms: str) -> tuple[list[str], list[str]]:
    if isinstance(obj, list):
        if not all(isinstance(x, str) for x in obj):
            raise NeurflowInputError(f"class-names file {path}: a JSON list must hold names (strings): write {forms}")
        return [x.strip() for x in obj], []
    if not isinstance(obj, dict):
        raise NeurflowInputError(f"class-names file {path} holds a JSON {type(obj).__name__}: write {forms}")
    if obj and all(isinstance(v, int) and not isinstance(v, bool) for v in obj.values()):
        by_index = {int(v): str(k) for k, v in obj.items()}  # ImageFolder.class_to_idx: name -> index
        pairs = {i: (None, name) for i, name in by_index.items()}
        if len(by_index) != len(obj):
            raise NeurflowInputError(f"class-names file {path} gives two names the same index: one index per class")
    else:
        pairs = {}
        for k, v in obj.items():
            if not _INDEX.fullmatch(str(k).strip()):
                raise NeurflowInputError(f"class-names file {path}: key {k!r} is not a class index: write {forms}")
            if isinstance(v, str):
                pairs[int(k)] = (None, v)
            elif isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v):
                pairs[int(k)] = (v[0], v[1])  # Keras' imagenet_class_index.json: [synset id, name]
            else:
                raise NeurflowInputError(f"class-names file {path}: the value of {k!r} is not a name (or [id, name]): write {forms}")
    missing = sorted(set(range(len(pairs))) - set(pairs))
    if missing:
        raise NeurflowInputError(f"class-names file {path} has no class {missing[0]}: indices must be 0..{len(pairs) - 1}, each once")
    ordered = [pairs[i] for i in range(len(pairs))]
    ids = [i for i, _ in ordered]
    return [n.strip() for _, n in ordered], ([i.strip() for i in ids] if all(ids) else [])


# ------------------------------------------------------------------------------ look-ups
class ClassNames:
    """A model's class names (and ids, e.g. ImageNet synset ids) with the look-ups users need."""

    def __init__(self, names: Sequence[str], ids: Sequence[str] = ()):
        self.names = [str(n) for n in names]
        self.ids = [str(i) for i in ids] if len(ids) == len(self.names) else []
        self._id = {normalise(i): c for c, i in enumerate(self.ids)}
        self._exact: dict[str, list[int]] = {}
        self._norm: dict[str, list[int]] = {}
        for c, name in enumerate(self.names):
            self._exact.setdefault(name, []).append(c)
            self._norm.setdefault(normalise(name), []).append(c)

    def __len__(self) -> int:
        return len(self.names)

    def label(self, c: int) -> str:
        """'Chihuahua (151, n02085620)': how errors name a class."""
        extra = f", {self.ids[c]}" if self.ids else ""
        return f"{self.names[c]} ({c}{extra})"

    def find(self, text: str, what: str = "class name", fix: str | None = None) -> int | None:
        """The class `text` names (synset id, exact name, then normalised name); None when none does.

        A text that normalises to several classes' names and is none of them exactly is a
        `NeurflowInputError` that lists them: picking one would be a guess."""
        text = str(text).strip()
        key = normalise(text)
        if key in self._id:
            return self._id[key]
        exact = self._exact.get(text, [])
        if len(exact) == 1:
            return exact[0]
        found = self._norm.get(key, [])
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            fix = fix or ("use the exact name, the synset id or the index" if self.ids else "use the exact name or the index")
            raise NeurflowInputError(
                f"{what} {text!r} is ambiguous: it names {', '.join(self.label(c) for c in found)}; {fix}"
            )
        return None

    def close(self, text: str, n: int = 3) -> list[str]:
        """Up to `n` classes whose name (or id) is spelled like `text`, as `label` writes them."""
        keys: dict[str, int] = {}
        for c, name in enumerate(self.names):
            keys.setdefault(normalise(name), c)
        for c, i in enumerate(self.ids):
            keys.setdefault(normalise(i), c)
        hits = difflib.get_close_matches(normalise(text), list(keys), n=n, cutoff=0.6)
        out: list[str] = []
        for h in hits:
            lab = self.label(keys[h])
            if lab not in out:
                out.append(lab)
        return out

    def suggestion(self, text: str) -> str:
        close = self.close(text)
        return f"close matches: {'; '.join(close)}" if close else "no class is named like it"


def select_classes(
    text: str,
    names: ClassNames | Sequence[str],
    *,
    available: Iterable[int] | None = None,
    where: str = "the data",
    option: str = "--classes",
) -> list[int]:
    """Sorted class indices from `text`: comma-separated indices, ranges (``0-9``), names or ``all``.

    `available` are the classes the data holds (every class of a data set; the classes that have
    a sub-folder in an image folder): ``all`` means those, and a class outside them is an error
    here, before anything is built or written.  A name is looked up with `ClassNames.find`; an
    unknown one is an error that lists close matches.  Names are separated by commas, so a name
    that holds a comma cannot be given (use its index)."""
    lookup = names if isinstance(names, ClassNames) else ClassNames(names)
    n = len(lookup)
    avail = sorted(set(available)) if available is not None else None
    out: set[int] = set()
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    for part in parts:
        rng = _RANGE.fullmatch(part)
        if part.lower() == "all":
            out.update(avail if avail is not None else range(n))
        elif _INDEX.fullmatch(part):
            out.add(int(part))
        elif rng:
            a, b = int(rng.group(1)), int(rng.group(2))
            if a > b:
                raise NeurflowInputError(f"{option}: descending range {part}: write {b}-{a}")
            out.update(range(a, b + 1))
        else:
            found = lookup.find(part)
            if found is None:
                if not any(not re.fullmatch(r"class \d+", x) for x in lookup.names):
                    raise NeurflowInputError(
                        f"{option}: {part!r} is not a class index, a range like 2-5, or 'all' "
                        f"(the model has no class names: pass {spelled('class_names', 'FILE', placeholder=True)} to use names)"
                    )
                raise NeurflowInputError(f"{option}: unknown class {part!r}: {lookup.suggestion(part)}")
            out.add(found)
    if not out:
        if parts and avail is not None:
            raise NeurflowInputError(f"{option} all: {where} holds none of the model's classes")
        raise NeurflowInputError(f"{option} is empty: give indices like 0,3,7, ranges like 2-5, class names or 'all'")
    bad = sorted(c for c in out if not 0 <= c < n)
    if bad:
        raise NeurflowInputError(f"class index {bad[0]} out of range: the model has classes 0..{n - 1}")
    if avail is not None:
        absent = [c for c in sorted(out) if c not in set(avail)]
        if absent:
            c = absent[0]
            more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
            raise NeurflowInputError(f"class {lookup.label(c)}{more} has no images in {where}{folder_hint(lookup, c)}")
    return sorted(out)


def folder_hint(lookup: ClassNames, c: int) -> str:
    """': add a sub-folder named 'Chihuahua' or 'n02085620'' (empty for a class without a name)."""
    names = [repr(lookup.names[c])] + ([repr(lookup.ids[c])] if lookup.ids else [])
    return f": add a sub-folder named {' or '.join(names)}" if not re.fullmatch(r"class \d+", lookup.names[c]) else ""


def match_folders(folders: Sequence[str], lookup: ClassNames, where: str) -> dict[str, int]:
    """Sub-folder name -> model class index, by synset id or name (`ClassNames.find`).

    Every sub-folder must match exactly one class and no two the same one: a folder that matches
    nothing is most likely misspelt, and guessing (the sorted position, as before) put photos
    under the wrong class."""
    out: dict[str, int] = {}
    unmatched: list[str] = []
    for folder in folders:
        fix = "rename it to the exact name" + (" or the synset id" if lookup.ids else "")
        c = lookup.find(folder, what=f"sub-folder of {where}:", fix=fix)
        if c is None:
            unmatched.append(folder)
        else:
            out[folder] = c
    if unmatched:
        first = unmatched[0]
        others = f" ({len(unmatched) - 1} more sub-folders match no class either)" if len(unmatched) > 1 else ""
        how = "a class name or an ImageNet synset id" if lookup.ids else f"a class name (see {spelled('class_names')})"
        raise NeurflowInputError(
            f"sub-folder {first!r} of {where} matches no class of the model{others}: "
            f"{lookup.suggestion(first)}; name each sub-folder by {how}"
        )
    seen: dict[int, str] = {}
    for folder, c in sorted(out.items()):
        if c in seen:
            raise NeurflowInputError(
                f"sub-folders {seen[c]!r} and {folder!r} of {where} are both class {lookup.label(c)}: merge them"
            )
        seen[c] = folder
    return out
