"""Filtering recipes: named rule sets (``config/recipes/*.yaml``) and user YAML over signal names.

A recipe is a YAML mapping; every key is optional except ``name``::

    name: my-mix                 # [A-Za-z0-9._-]{1,64}: the folder filtered/{name}/ of the output
                                 # (a named set's name only for that set's exact rules)
    extends: gopher              # start from a named set: its rules, each replaced in place by a
                                 # rule of the same name here, then the new rules here
    languages: [en, de]          # default: every published language of the snapshot
    buckets: [head, middle]      # default: head, middle (tail files have no quality signals)
    dedup: both                  # none | exact | fuzzy | both (default: both)
    token_budget: 1000000000     # stop once this many tokens are kept, in shard order (default: none)
    rules:                       # document rules: a document is KEPT only if every rule holds
      - {name: enough_words, signal: rps_doc_word_count, op: ">=", value: 50}
      - {name: few_bullets, signal: rps_lines_start_with_bulletpoint, aggregate: sum,
         divide_by: ccnet_nlines, op: "<=", value: 0.9}
      - {name: palm, signal: rps_doc_ml_palm_score, op: ">=", value: 0.5, "null": keep}
    line_rules:                  # line rules: a LINE is kept only if every rule holds on its span
      - {name: terminal_punct, signal: rps_lines_ending_with_terminal_punctution_mark, op: "==", value: 1}

A document rule reads a document-level signal (its one span's score) or, with ``aggregate`` (sum,
mean, min, max over the line spans, null scores skipped; ``divide_by`` a document-level signal),
a line-level one.  A line rule reads a line-level signal span by span: a line whose span fails is
cut out of ``raw_content`` (``raw_content[start:end]``, its ``\\n`` included).  A rule's value is
null when the signal is missing or null, or an aggregate has no non-null span: ``null: drop`` (the
default) fails the rule, ``null: keep`` passes it.  Everything is validated strictly: an unknown
signal, operator, key or aggregate, a value of the wrong type, or a level mismatch (a line rule
over a document signal) is a :class:`RecipeError` naming the file and the rule.  ``null`` may be
written unquoted (YAML then reads the key as None; it means the same).  A recipe file is at most
1 MB of YAML without anchors or aliases (``&``/``*``); values in error messages are shown in at
most about 200 characters.  ``buckets: [tail]`` needs ``dedup: none`` (tail files are never
deduplicated in RPv2).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import operator
import re
import reprlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rpj_tasks.core.config import REPO_ROOT
from rpj_tasks.core.errors import ConfigError
from rpj_tasks.core.layout import BUCKETS, LANGUAGES
from rpj_tasks.core.schema import LINE_SIGNAL_KEYS, SIGNAL_KEYS

#: Where the named sets live; ``--recipe NAME`` is ``{RECIPES_DIR}/{NAME}.yaml``.
RECIPES_DIR = REPO_ROOT / "config" / "recipes"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
AGGREGATES = ("sum", "mean", "min", "max")
DEDUP_MODES = ("none", "exact", "fuzzy", "both")
DOC_SIGNALS = tuple(k for k in SIGNAL_KEYS if k not in LINE_SIGNAL_KEYS)
RULE_KEYS = {"name", "signal", "op", "value", "aggregate", "divide_by", "null", "why"}
LINE_RULE_KEYS = {"name", "signal", "op", "value", "null", "why"}
RECIPE_KEYS = {"name", "extends", "description", "languages", "buckets", "dedup", "token_budget", "rules", "line_rules"}
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few rules: a larger file is refused unread
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 6, 6, 120, 120, 60


def shown(value: Any) -> str:
    """``repr(value)`` capped at about 200 characters, for error messages about untrusted YAML."""
    text = _REPR.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class _RecipeLoader(yaml.SafeLoader):
    """YAML's safe subset without anchors and aliases (``&a`` / ``*a``): recipes do not need them,
    and aliases let a small file expand into a huge document (a "billion laughs" bomb)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (& and *) are not allowed in a recipe", event.start_mark
            )
        return super().compose_node(parent, index)


class RecipeError(ConfigError):
    """A recipe file is not valid (the message names the file and the rule)."""


@dataclass(frozen=True)
class Rule:
    """One keep condition: ``value(signal) op value`` (see the module doc)."""

    name: str
    signal: str
    op: str
    value: float
    aggregate: str | None = None
    divide_by: str | None = None
    null: str = "drop"
    why: str = ""

    def score(self, signals: dict[str, Any]) -> float | None:
        """The rule's left-hand side on one document's ``quality_signals`` (None: missing/null)."""
        spans = signals.get(self.signal)
        if not isinstance(spans, list):
            return None
        if self.aggregate is None:
            return _number(spans[0][2]) if spans and isinstance(spans[0], list) and len(spans[0]) == 3 else None
        scores = [s for s in (_number(span[2]) for span in spans if isinstance(span, list) and len(span) == 3) if s is not None]
        if not scores:
            return None
        if self.aggregate == "sum":
            value = math.fsum(scores)
        elif self.aggregate == "mean":
            value = math.fsum(scores) / len(scores)
        else:
            value = min(scores) if self.aggregate == "min" else max(scores)
        if self.divide_by is not None:
            d = signals.get(self.divide_by)
            denom = _number(d[0][2]) if isinstance(d, list) and d and isinstance(d[0], list) and len(d[0]) == 3 else None
            if not denom:
                return None
            value = value / denom
        return float(value)

    def passes(self, score: float | None) -> bool:
        if score is None:
            return self.null == "keep"
        return OPS[self.op](score, self.value)


def _finite(x: int | float) -> bool:
    """A finite float, or an int a float can hold (a huge YAML int overflows ``math.isfinite``)."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str = ""
    languages: tuple[str, ...] | None = None  # None: every published language
    buckets: tuple[str, ...] = ("head", "middle")
    dedup: str = "both"
    token_budget: int | None = None
    rules: tuple[Rule, ...] = ()
    line_rules: tuple[Rule, ...] = ()
    source: str = ""  # where it was read from (not part of the hash)
    extends: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The recipe as resolved (named sets expanded), JSON-able; what the hash covers."""
        d = asdict(self)
        d.pop("source")
        d["languages"] = list(self.languages) if self.languages is not None else None
        d["buckets"] = list(self.buckets)
        d["extends"] = list(self.extends)
        d["rules"] = [_rule_dict(r) for r in self.rules]
        d["line_rules"] = [_rule_dict(r) for r in self.line_rules]
        return d

    @property
    def hash(self) -> str:
        """sha256 of the resolved recipe's canonical JSON (first 16 hex digits name its version)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def needs_signals(self) -> bool:
        return bool(self.rules or self.line_rules)


def _rule_dict(rule: Rule) -> dict[str, Any]:
    return {k: v for k, v in asdict(rule).items() if v is not None and v != ""}


def named_recipes() -> list[str]:
    """The named sets shipped in ``config/recipes/``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(spec: str, *, base: Path | None = None) -> Recipe:
    """A recipe by name (``config/recipes/{name}.yaml``) or by path to a YAML file.

    ``base`` (the DAG: ``config/recipes``) confines a path to that folder."""
    if not isinstance(spec, str) or not spec:
        raise RecipeError("a recipe is a name (e.g. gopher) or a path to a YAML file")
    if NAME_RE.fullmatch(spec) and not spec.endswith((".yaml", ".yml")):
        path = RECIPES_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise RecipeError(
                f"unknown recipe {shown(spec)}: the named sets are {', '.join(named_recipes())} (or give a YAML file)"
            )
    else:
        path = Path(spec)
        if base is not None:
            resolved = (base / spec).resolve()
            if base.resolve() not in resolved.parents:
                raise RecipeError(f"recipe {shown(spec)}: only files within {base} are allowed here")
            path = resolved
    return _load_file(path, seen=())


def _load_file(path: Path, seen: tuple[str, ...]) -> Recipe:
    where = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
        if len(raw) > MAX_RECIPE_BYTES:
            raise RecipeError(f"recipe {where} is larger than {MAX_RECIPE_BYTES} bytes: not a recipe")
        data = yaml.load(raw.decode("utf-8"), Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader without aliases)
    except OSError as exc:
        raise RecipeError(f"recipe {where}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {where} is not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_recipe(data, where, seen=seen + (str(path.resolve()),))


def parse_recipe(data: Any, where: str = "<recipe>", *, seen: tuple[str, ...] = ()) -> Recipe:
    """Validate a recipe mapping (see the module doc); ``where`` names it in every error."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {where}: expected a mapping with at least 'name', got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - RECIPE_KEYS)
    if unknown:
        raise RecipeError(f"recipe {where}: unknown keys {shown(unknown)} (allowed: {', '.join(sorted(RECIPE_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise RecipeError(f"recipe {where}: 'name' must be 1-64 letters, digits, '.', '_' or '-', got {shown(name)}")
    parent: Recipe | None = None
    if "extends" in data:
        ext = data["extends"]
        if not isinstance(ext, str) or not NAME_RE.fullmatch(ext) or not (RECIPES_DIR / f"{ext}.yaml").is_file():
            raise RecipeError(f"recipe {where}: 'extends' must name a named set ({', '.join(named_recipes())}), got {shown(ext)}")
        path = RECIPES_DIR / f"{ext}.yaml"
        if str(path.resolve()) in seen:
            raise RecipeError(f"recipe {where}: 'extends: {ext}' is circular")
        parent = _load_file(path, seen)
    description = data.get("description", parent.description if parent else "")
    if not isinstance(description, str):
        raise RecipeError(f"recipe {where}: 'description' must be a string")
    languages: tuple[str, ...] | None = parent.languages if parent else None
    if "languages" in data:
        languages = _choice_list(data["languages"], LANGUAGES, "languages", where)
    buckets = parent.buckets if parent else ("head", "middle")
    if "buckets" in data:
        buckets = _choice_list(data["buckets"], BUCKETS, "buckets", where)
    dedup = data.get("dedup", parent.dedup if parent else "both")
    if dedup not in DEDUP_MODES:
        raise RecipeError(f"recipe {where}: 'dedup' must be one of {', '.join(DEDUP_MODES)}, got {shown(dedup)}")
    budget = data.get("token_budget", parent.token_budget if parent else None)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise RecipeError(f"recipe {where}: 'token_budget' must be a positive integer (tokens) or absent, got {shown(budget)}")
    own_rules = _rules(data.get("rules", []), where, line=False)
    own_line_rules = _rules(data.get("line_rules", []), where, line=True)
    names = [r.name for r in own_rules + own_line_rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RecipeError(f"recipe {where}: rule names must be unique, {shown(dupes)} used twice")
    rules = _override(parent.rules if parent else (), own_rules, parent.line_rules if parent else (), where)
    line_rules = _override(parent.line_rules if parent else (), own_line_rules, parent.rules if parent else (), where)
    if "tail" in buckets and (rules or line_rules):
        raise RecipeError(
            f"recipe {where}: bucket 'tail' has no quality signals (RPv2 annotates head and middle only), "
            "so rules cannot apply to it: drop 'tail' from 'buckets' or the rules"
        )
    if buckets == ("tail",) and dedup != "none":
        raise RecipeError(
            f"recipe {where}: dedup {dedup!r} does nothing on bucket 'tail' (RPv2 deduplicates head and middle "
            "only: tail files have no duplicates or clusters): set 'dedup: none' or add head/middle to 'buckets'"
        )
    recipe = Recipe(
        name=name,
        description=description,
        languages=languages,
        buckets=buckets,
        dedup=dedup,
        token_budget=budget,
        rules=rules,
        line_rules=line_rules,
        source=where,
        extends=((parent.extends + (parent.name,)) if parent else ()),
    )
    if name in named_recipes() and not _is_named_file(where, name) and recipe.hash != load_recipe(name).hash:
        raise RecipeError(
            f"recipe {where}: name {name!r} is a named set (config/recipes/{name}.yaml) but these rules differ "
            f"from it: give the recipe its own name (outputs go to filtered/{{name}}/, and two versions must not mix)"
        )
    return recipe


def _override(inherited: tuple[Rule, ...], own: tuple[Rule, ...], other_kind: tuple[Rule, ...], where: str) -> tuple[Rule, ...]:
    """The named set's rules with each rule of the same name replaced in place by the extending
    recipe's, then the extending recipe's new rules (a rule cannot change kind: document/line)."""
    clash = sorted({r.name for r in own} & {r.name for r in other_kind})
    if clash:
        raise RecipeError(
            f"recipe {where}: {shown(clash)} names a rule of the other kind (rules / line_rules) in the extended set"
        )
    mine = {r.name: r for r in own}
    names = {r.name for r in inherited}
    return tuple(mine.get(r.name, r) for r in inherited) + tuple(r for r in own if r.name not in names)


def _is_named_file(where: str, name: str) -> bool:
    try:
        return Path(where).resolve() == (RECIPES_DIR / f"{name}.yaml").resolve()
    except (OSError, ValueError):
        return False


def _choice_list(value: Any, allowed: tuple[str, ...], key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RecipeError(f"recipe {where}: '{key}' must be a non-empty list of strings, got {shown(value)}")
    bad = [v for v in value if v not in allowed]
    if bad:
        raise RecipeError(f"recipe {where}: '{key}' has {shown(bad)}; allowed: {', '.join(allowed)}")
    return tuple(v for v in allowed if v in value)  # canonical order, no repeats


def _rules(items: Any, where: str, *, line: bool) -> tuple[Rule, ...]:
    kind = "line_rules" if line else "rules"
    if not isinstance(items, list):
        raise RecipeError(f"recipe {where}: '{kind}' must be a list of rules, got {type(items).__name__}")
    return tuple(_rule(item, f"recipe {where}: {kind}[{i}]", line=line) for i, item in enumerate(items))


def _rule(item: Any, label: str, *, line: bool) -> Rule:
    if not isinstance(item, dict):
        raise RecipeError(f"{label}: expected a mapping like {{signal: ..., op: '>=', value: ...}}, got {shown(item)}")
    name = item.get("name")
    if name is not None:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise RecipeError(f"{label}: 'name' must be 1-64 letters, digits, '.', '_' or '-', got {shown(name)}")
        label = f"{label} ({name})"
    if None in item:  # unquoted `null: keep`: YAML reads the key `null` as None
        if "null" in item:
            raise RecipeError(f"{label}: 'null' is given twice (quoted and unquoted)")
        item = {("null" if k is None else k): v for k, v in item.items()}
    allowed = LINE_RULE_KEYS if line else RULE_KEYS
    unknown = sorted(set(map(str, item)) - allowed)
    if unknown:
        raise RecipeError(f"{label}: unknown keys {shown(unknown)} (allowed: {', '.join(sorted(allowed))})")
    for key in ("signal", "op", "value"):
        if key not in item:
            raise RecipeError(f"{label}: '{key}' is required")
    signal = item["signal"]
    if not isinstance(signal, str) or signal not in SIGNAL_KEYS:
        short = isinstance(signal, str) and len(signal) <= 200
        close = difflib.get_close_matches(signal, SIGNAL_KEYS, n=3, cutoff=0.8) if short else []
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see docs/spec/quality_signals.md §3)"
        raise RecipeError(f"{label}: unknown signal {shown(signal)}{hint}")
    op = item["op"]
    if not isinstance(op, str) or op not in OPS:
        raise RecipeError(f"{label}: bad operator {shown(op)}; use one of {' '.join(OPS)}")
    value = item["value"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise RecipeError(f"{label}: 'value' must be a finite number, got {shown(value)}")
    null = item.get("null", "drop")
    if null not in ("drop", "keep"):
        raise RecipeError(f"{label}: 'null' must be drop or keep, got {shown(null)}")
    why = item.get("why", "")
    if not isinstance(why, str):
        raise RecipeError(f"{label}: 'why' must be a string")
    aggregate, divide_by = item.get("aggregate"), item.get("divide_by")
    is_line_signal = signal in LINE_SIGNAL_KEYS
    if line and not is_line_signal:
        raise RecipeError(
            f"{label}: {signal} is a document-level signal; line rules need a line-level one ({', '.join(LINE_SIGNAL_KEYS)})"
        )
    if not line:
        if is_line_signal and aggregate is None:
            raise RecipeError(
                f"{label}: {signal} is line-level: a document rule needs 'aggregate' ({', '.join(AGGREGATES)}), "
                "or use it in line_rules"
            )
        if not is_line_signal and (aggregate is not None or divide_by is not None):
            raise RecipeError(f"{label}: {signal} is document-level: 'aggregate' and 'divide_by' apply to line-level signals")
        if aggregate is not None and aggregate not in AGGREGATES:
            raise RecipeError(f"{label}: 'aggregate' must be one of {', '.join(AGGREGATES)}, got {shown(aggregate)}")
        if divide_by is not None and divide_by not in DOC_SIGNALS:
            raise RecipeError(f"{label}: 'divide_by' must name a document-level signal, got {shown(divide_by)}")
    if name is None:
        name = f"{signal}{op}{value}" if aggregate is None else f"{aggregate}({signal}){op}{value}"
    return Rule(
        name=name,
        signal=signal,
        op=op,
        value=value,
        aggregate=aggregate,
        divide_by=divide_by,
        null=null,
        why=why,
    )
