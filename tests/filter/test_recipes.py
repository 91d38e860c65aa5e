"""Recipes (rpj_tasks/filter/recipe.py): each named set on hand-made documents against its published
definition, line removal by spans, and the strict validation of user YAML.

Documents are built as quality-signal records (docs/spec/rpv2_format.md §4): document-level signals
hold one span ``[0, len(raw), score]``, line-level ones one span per line (quality_signals.md §2.4).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from rpj_tasks.filter import RecipeError, load_recipe, parse_recipe
from rpj_tasks.filter.stage import evaluate

LINE = re.compile(r"[^\n]*\n|[^\n]+$")


def make(raw: str, lines: dict[str, list[float | None]] | None = None, **doc: float | None) -> dict[str, Any]:
    """A ``quality_signals`` dict for ``raw``: ``doc`` as document-level, ``lines`` one score per line slice."""
    n = len(raw)
    signals: dict[str, Any] = {k: [[0, n, v]] for k, v in doc.items()}
    slices = [(m.start(), m.end()) for m in LINE.finditer(raw)]
    signals.setdefault("ccnet_nlines", [[0, n, float(raw.count("\n") + 1)]])
    for name, scores in (lines or {}).items():
        assert len(scores) == len(slices), (name, len(scores), len(slices))
        signals[name] = [[s, e, v] for (s, e), v in zip(slices, scores)]
    return signals


GOOD_GOPHER = {
    "rps_doc_word_count": 500,
    "rps_doc_mean_word_length": 5.0,
    "rps_doc_symbol_to_word_ratio": 0.0,
    "rps_doc_frac_chars_top_2gram": 0.05,
}


def gopher_doc(bullets: list[float] | None = None, **changes: float | None) -> dict[str, Any]:
    bullets = bullets if bullets is not None else [0.0] * 10
    raw = "".join(f"line {i}\n" for i in range(len(bullets) - 1)) + "last"
    return make(raw, {"rps_lines_start_with_bulletpoint": list(bullets)}, **{**GOOD_GOPHER, **changes})


def card_gopher_rules_pass(signals: dict[str, Any]) -> bool:
    """The RPv2 dataset card's example ``gopher_rules_pass`` (huggingface.co/datasets/
    togethercomputer/RedPajama-Data-V2, README), restated: 50 <= words <= 10,000; 3 <= mean word
    length <= 10; symbol-to-word ratio <= 0.1; bullet lines / ccnet_nlines <= 0.9; top 2-gram
    character fraction <= 0.2."""
    words = signals["rps_doc_word_count"][0][2]
    if words < 50 or words > 10_000:
        return False
    mwl = signals["rps_doc_mean_word_length"][0][2]
    if mwl < 3 or mwl > 10:
        return False
    if signals["rps_doc_symbol_to_word_ratio"][0][2] > 0.1:
        return False
    bullets = sum(span[2] for span in signals["rps_lines_start_with_bulletpoint"])
    if bullets / signals["ccnet_nlines"][0][2] > 0.9:
        return False
    return signals["rps_doc_frac_chars_top_2gram"][0][2] <= 0.2


@pytest.mark.parametrize(
    ("changes", "dropped_by"),
    [
        ({}, None),
        ({"rps_doc_word_count": 49}, "word_count_min"),  # card: words between 50 and 10'000
        ({"rps_doc_word_count": 50}, None),
        ({"rps_doc_word_count": 10_000}, None),
        ({"rps_doc_word_count": 10_001}, "word_count_max"),
        ({"rps_doc_mean_word_length": 2.99}, "mean_word_length_min"),  # card: mean word length 3..10
        ({"rps_doc_mean_word_length": 3.0}, None),
        ({"rps_doc_mean_word_length": 10.0}, None),
        ({"rps_doc_mean_word_length": 10.01}, "mean_word_length_max"),
        ({"rps_doc_mean_word_length": None}, "mean_word_length_min"),  # null (no words): the rule cannot pass
        ({"rps_doc_symbol_to_word_ratio": 0.1}, None),  # card: symbol-to-word ratio <= 0.1
        ({"rps_doc_symbol_to_word_ratio": 0.11}, "symbol_to_word_ratio"),
        ({"rps_doc_frac_chars_top_2gram": 0.2}, None),  # card: top 2-gram fraction <= 0.2
        ({"rps_doc_frac_chars_top_2gram": 0.21}, "top_2gram"),
    ],
)
def test_gopher_thresholds_of_the_card(changes: dict[str, Any], dropped_by: str | None) -> None:
    recipe = load_recipe("gopher")
    signals = gopher_doc(**changes)
    assert evaluate(recipe, signals, "x").dropped_by == dropped_by
    if changes.get("rps_doc_mean_word_length", 0) is not None:
        assert card_gopher_rules_pass(signals) == (dropped_by is None)


def test_gopher_bullet_lines_over_ccnet_nlines() -> None:
    recipe = load_recipe("gopher")
    assert evaluate(recipe, gopher_doc([1.0] * 9 + [0.0]), "x").dropped_by is None  # 9/10 = 0.9: at most 90%
    assert evaluate(recipe, gopher_doc([1.0] * 10), "x").dropped_by == "bullet_lines"


def test_gopher_agrees_with_the_card_on_random_documents() -> None:
    recipe = load_recipe("gopher")
    rng = random.Random(16)
    kept = dropped = 0
    for _ in range(2000):
        n = rng.randint(1, 12)
        signals = gopher_doc(
            [float(rng.random() < 0.8) for _ in range(n)],
            rps_doc_word_count=rng.choice([rng.randint(0, 200), rng.randint(9_900, 10_100)]),
            rps_doc_mean_word_length=round(rng.uniform(2, 11), 2),
            rps_doc_symbol_to_word_ratio=round(rng.uniform(0, 0.15), 3),
            rps_doc_frac_chars_top_2gram=round(rng.uniform(0, 0.3), 3),
        )
        ours = evaluate(recipe, signals, "x").dropped_by is None
        assert ours == card_gopher_rules_pass(signals), signals
        kept, dropped = kept + ours, dropped + (not ours)
    assert kept > 100 and dropped > 100  # both outcomes were exercised


C4_RAW = (
    "Welcome to the page of our club.\n"  # kept
    "Menu Home About\n"  # no terminal punctuation: cut
    "Please enable JavaScript to view it.\n"  # javascript: cut
    "Ok.\n"  # one word: cut (C4 keeps lines with at least 3 words)
    "We meet every Monday at noon!\n"  # kept
    "Is it free? Yes it is."  # kept (last line, no newline)
)
C4_LINES = {
    "rps_lines_ending_with_terminal_punctution_mark": [1.0, 0.0, 1.0, 1.0, 1.0, 1.0],
    "rps_lines_num_words": [7, 3, 6, 1, 6, 6],
    "rps_lines_javascript_counts": [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
}
C4_DOC = {"rps_doc_num_sentences": 6.0, "rps_doc_ldnoobw_words": 0.0, "rps_doc_lorem_ipsum": 0.0, "rps_doc_curly_bracket": 0.0}


def test_c4_line_removal_by_spans() -> None:
    """C4 (Raffel et al. 2020 §2.2): keep only lines ending in terminal punctuation, with at least 3
    words, without the word javascript; the cut lines are removed from the text by their spans."""
    verdict = evaluate(load_recipe("c4"), make(C4_RAW, C4_LINES, **C4_DOC), C4_RAW)
    assert verdict.dropped_by is None
    assert verdict.text == "Welcome to the page of our club.\nWe meet every Monday at noon!\nIs it free? Yes it is."
    assert sorted(verdict.removed.values()) == ["line_min_words", "no_javascript", "terminal_punctuation"]
    assert verdict.lines_failing == {"terminal_punctuation": 1, "line_min_words": 1, "no_javascript": 1}


def test_c4_cut_last_line_leaves_no_trailing_newline() -> None:
    raw = "A proper first line here.\nmenu"
    lines = {
        "rps_lines_ending_with_terminal_punctution_mark": [1.0, 0.0],
        "rps_lines_num_words": [5, 1],
        "rps_lines_javascript_counts": [0.0, 0.0],
    }
    assert evaluate(load_recipe("c4"), make(raw, lines, **C4_DOC), raw).text == "A proper first line here."


@pytest.mark.parametrize(
    ("changes", "dropped_by"),
    [
        ({"rps_doc_num_sentences": 4.0}, "num_sentences"),  # C4: pages with fewer than 5 sentences
        ({"rps_doc_num_sentences": 5.0}, None),
        ({"rps_doc_ldnoobw_words": 1.0}, "no_bad_words"),  # C4: any LDNOOBW word
        ({"rps_doc_lorem_ipsum": 0.002}, "no_lorem_ipsum"),  # C4: "lorem ipsum"
        ({"rps_doc_curly_bracket": 0.01}, "no_curly_bracket"),  # C4: a curly bracket
    ],
)
def test_c4_page_rules(changes: dict[str, float], dropped_by: str | None) -> None:
    assert evaluate(load_recipe("c4"), make(C4_RAW, C4_LINES, **{**C4_DOC, **changes}), C4_RAW).dropped_by == dropped_by


REFINEDWEB_GOOD = {
    **GOOD_GOPHER,
    "rps_doc_frac_lines_end_with_ellipsis": 0.0,
    "rps_doc_frac_no_alph_words": 0.05,
    "rps_doc_frac_chars_top_3gram": 0.0,
    "rps_doc_frac_chars_top_4gram": 0.0,
    **{f"rps_doc_frac_chars_dupe_{n}grams": 0.0 for n in range(5, 11)},
    "rps_doc_ut1_blacklist": None,
}


@pytest.mark.parametrize(
    ("changes", "dropped_by"),
    [
        ({}, None),
        ({"rps_doc_word_count": 100_000}, None),  # Gopher paper: up to 100,000 words (not the card's 10,000)
        ({"rps_doc_word_count": 100_001}, "word_count_max"),
        ({"rps_doc_frac_lines_end_with_ellipsis": 0.31}, "ellipsis_lines"),  # Gopher: > 30% ellipsis lines
        ({"rps_doc_frac_no_alph_words": 0.21}, "alpha_words"),  # Gopher: 80% of words with a letter
        ({"rps_doc_frac_chars_top_3gram": 0.18}, None),  # Gopher repetition: top 3-gram 0.18
        ({"rps_doc_frac_chars_top_3gram": 0.19}, "top_3gram"),
        ({"rps_doc_frac_chars_top_4gram": 0.17}, "top_4gram"),  # 0.16
        ({"rps_doc_frac_chars_dupe_5grams": 0.16}, "dupe_5grams"),  # 0.15
        ({"rps_doc_frac_chars_dupe_10grams": 0.10}, None),  # 0.10
        ({"rps_doc_frac_chars_dupe_10grams": 0.11}, "dupe_10grams"),
        ({"rps_doc_ut1_blacklist": 7}, "url_blocklist"),  # a domain on a UT1 list
    ],
)
def test_refinedweb_like_thresholds(changes: dict[str, Any], dropped_by: str | None) -> None:
    signals = gopher_doc(**{**REFINEDWEB_GOOD, **changes})
    assert evaluate(load_recipe("refinedweb"), signals, "x").dropped_by == dropped_by


@pytest.mark.parametrize(
    ("palm", "wikipedia", "kept"),
    [(0.6, None, True), (0.5, None, True), (0.4, None, False), (None, 0.7, True), (None, 0.3, False)],
)
def test_classifier_thresholds(palm: float | None, wikipedia: float | None, kept: bool) -> None:
    signals = make("x", rps_doc_ml_palm_score=palm, rps_doc_ml_wikipedia_score=wikipedia)
    assert (evaluate(load_recipe("classifier"), signals, "x").dropped_by is None) == kept


def test_perplexity_is_the_head_bucket_and_extends() -> None:
    assert load_recipe("perplexity").buckets == ("head",)
    mine = parse_recipe(
        {"name": "ppl300", "extends": "perplexity", "rules": [{"signal": "ccnet_perplexity", "op": "<", "value": 300}]}
    )
    assert mine.buckets == ("head",) and mine.extends == ("perplexity",)
    assert evaluate(mine, make("x", ccnet_perplexity=299.9), "x").dropped_by is None
    assert evaluate(mine, make("x", ccnet_perplexity=300.0), "x").dropped_by == "ccnet_perplexity<300"


def test_recipe_hash_follows_the_resolved_rules() -> None:
    a = parse_recipe({"name": "r", "rules": [{"signal": "rps_doc_word_count", "op": ">=", "value": 50}]})
    b = parse_recipe({"name": "r", "rules": [{"signal": "rps_doc_word_count", "op": ">=", "value": 51}]})
    assert a.hash != b.hash
    assert a.hash == parse_recipe({"name": "r", "rules": [{"signal": "rps_doc_word_count", "op": ">=", "value": 50}]}).hash


# ---------------------------------------------------------------- user YAML: rejected with clear messages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: x\nrules:\n  - {name: wc, signal: rps_doc_wordcount, op: '>=', value: 50}\n",
            r"rules\[0\] \(wc\): unknown signal 'rps_doc_wordcount' \(did you mean",
        ),
        (
            "name: x\nrules:\n  - {signal: rps_doc_word_count, op: '=>', value: 50}\n",
            r"rules\[0\]: bad operator '=>'; use one of < <= > >= == !=",
        ),
        (
            "name: x\nrules:\n  - {signal: rps_doc_word_count, op: '>=', value: '50'}\n",
            r"'value' must be a finite number, got '50'",
        ),
        (
            "name: x\nrules:\n  - {signal: rps_doc_word_count, op: '>=', value: 50, weight: 2}\n",
            r"rules\[0\]: unknown keys \['weight'\]",
        ),
        ("name: x\nrules:\n  - {signal: rps_doc_word_count, value: 50}\n", r"rules\[0\]: 'op' is required"),
        ("name: x\nfilters: []\n", r"unknown keys \['filters'\]"),
        (
            "name: x\nline_rules:\n  - {signal: rps_doc_word_count, op: '>=', value: 3}\n",
            r"line_rules\[0\]: rps_doc_word_count is a document-level signal",
        ),
        (
            "name: x\nrules:\n  - {signal: rps_lines_num_words, op: '>=', value: 3}\n",
            r"rps_lines_num_words is line-level: a document rule needs 'aggregate'",
        ),
        (
            "name: x\nrules:\n  - {signal: rps_lines_num_words, aggregate: median, op: '>=', value: 3}\n",
            r"'aggregate' must be one of sum, mean, min, max",
        ),
        (
            "name: x\nbuckets: [tail]\nrules:\n  - {signal: rps_doc_word_count, op: '>=', value: 3}\n",
            r"bucket 'tail' has no quality signals",
        ),
        ("name: x\nlanguages: [en, xx]\n", r"'languages' has \['xx'\]"),
        ("name: x\ndedup: fuzzyish\n", r"'dedup' must be one of none, exact, fuzzy, both"),
        ("name: x\ntoken_budget: -5\n", r"'token_budget' must be a positive integer"),
        ("name: ../x\n", r"'name' must be 1-64 letters"),
        ("name: x\nextends: gopher2\n", r"'extends' must name a named set"),
        ("rules: [\n", r"is not valid YAML"),
    ],
)
def test_bad_yaml_is_rejected_naming_file_and_rule(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message) as caught:
        load_recipe(str(path))
    assert str(path) in str(caught.value)


def test_unknown_named_recipe_lists_the_named_sets() -> None:
    with pytest.raises(
        RecipeError, match="unknown recipe 'gopherr': the named sets are c4, classifier, gopher, perplexity, refinedweb"
    ):
        load_recipe("gopherr")


def test_a_dag_recipe_path_stays_within_config_recipes(tmp_path: Path) -> None:
    from rpj_tasks.filter.recipe import RECIPES_DIR

    assert load_recipe("gopher.yaml", base=RECIPES_DIR).name == "gopher"
    with pytest.raises(RecipeError, match="only files within"):
        load_recipe("../snapshots.yaml", base=RECIPES_DIR)


def test_null_keep_and_drop() -> None:
    recipe = parse_recipe(
        {
            "name": "n",
            "rules": [
                {"name": "a", "signal": "rps_doc_ml_palm_score", "op": ">", "value": 0.1, "null": "keep"},
                {"name": "b", "signal": "rps_doc_mean_word_length", "op": ">", "value": 1},
            ],
        }
    )
    assert evaluate(recipe, make("x", rps_doc_mean_word_length=2.0), "x").dropped_by is None  # palm missing: keep
    assert evaluate(recipe, make("x", rps_doc_ml_palm_score=0.5), "x").dropped_by == "b"  # mean word length missing: drop


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nrules:\n  - {signal: rps_doc_word_count, op: ['>='], value: 50}\n", r"bad operator \['>='\]"),
        (
            "name: x\nrules:\n  - {signal: [rps_doc_word_count], op: '>=', value: 50}\n",
            r"unknown signal \['rps_doc_word_count'\]",
        ),
        (f"name: x\nrules:\n  - {{signal: rps_doc_word_count, op: '>=', value: 1{'0' * 400}}}\n", r"'value' must be a finite"),
        ("name: x\nrules:\n  - {signal: rps_doc_word_count, op: '>=', value: .inf}\n", r"'value' must be a finite"),
        (
            "name: x\nrules:\n  - {signal: rps_doc_word_count, op: '>=', value: 1, null: keep, 'null': drop}\n",
            r"'null' is given twice",
        ),
        ("name: x\nbuckets: [tail]\n", r"dedup 'both' does nothing on bucket 'tail'"),
        ("name: x\nbuckets: [tail]\ndedup: exact\n", r"dedup 'exact' does nothing on bucket 'tail'"),
        ("name: gopher\nrules: []\n", r"name 'gopher' is a named set .* give the recipe its own name"),
        ("a: &a [1]\nname: x\n", r"anchors and aliases"),
        ("name: x\ndescription: *a\n", r"is not valid YAML"),
    ],
)
def test_bad_yaml_gives_an_error_not_a_traceback(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message) as caught:
        load_recipe(str(path))
    assert str(path) in str(caught.value)


def test_unquoted_null_key_is_the_null_option(tmp_path: Path) -> None:
    """YAML reads an unquoted ``null:`` key as None: it means the rule's ``null`` option."""
    path = tmp_path / "mine.yaml"
    path.write_text("name: x\nrules:\n  - {name: palm, signal: rps_doc_ml_palm_score, op: '>', value: 0.1, null: keep}\n")
    recipe = load_recipe(str(path))
    assert recipe.rules[0].null == "keep"
    assert evaluate(recipe, make("x"), "x").dropped_by is None


def test_yaml_bombs_are_refused_small_and_fast(tmp_path: Path) -> None:
    """Aliases are refused (a 382-byte alias bomb expanded into a 351 MB error message before), a
    file over 1 MB is not read, and a huge value is shown in at most about 200 characters."""
    bomb = ["name: x", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        bomb.append(f"{chr(97 + i)}: &{chr(97 + i)} [{','.join([f'*{chr(96 + i)}'] * 9)}]")
    bomb.append("rules: [{signal: rps_doc_word_count, op: '>=', value: *i}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(bomb) + "\n")
    with pytest.raises(RecipeError, match="anchors and aliases") as caught:
        load_recipe(str(path))
    assert len(str(caught.value)) < 1000
    big = tmp_path / "big.yaml"
    big.write_text("name: x\ndescription: '" + "x" * (1 << 20) + "'\n")
    with pytest.raises(RecipeError, match="larger than 1048576 bytes") as caught:
        load_recipe(str(big))
    long_value = tmp_path / "long.yaml"
    long_value.write_text("name: x\nrules:\n  - {signal: rps_doc_word_count, op: '>=', value: '" + "9" * 100_000 + "'}\n")
    with pytest.raises(RecipeError, match="'value' must be a finite number") as caught:
        load_recipe(str(long_value))
    assert len(str(caught.value)) < len(str(long_value)) + 400


def test_extending_recipe_overrides_a_named_rule_by_name(tmp_path: Path) -> None:
    """The Gopher paper's 100,000-word bound over the card's 10,000: same rule name, new value, same place."""
    path = tmp_path / "gopher100k.yaml"
    path.write_text(
        "name: gopher-100k\nextends: gopher\nrules:\n"
        "  - {name: word_count_max, signal: rps_doc_word_count, op: '<=', value: 100000}\n"
        "  - {name: extra, signal: rps_doc_lorem_ipsum, op: '==', value: 0, null: keep}\n"
    )
    recipe = load_recipe(str(path))
    gopher = load_recipe("gopher")
    assert [r.name for r in recipe.rules] == [r.name for r in gopher.rules] + ["extra"]
    assert {r.name: r.value for r in recipe.rules}["word_count_max"] == 100_000
    doc = gopher_doc(rps_doc_word_count=50_000)
    assert evaluate(gopher, doc, "x").dropped_by == "word_count_max"
    assert evaluate(recipe, doc, "x").dropped_by is None
    assert evaluate(recipe, gopher_doc(rps_doc_word_count=100_001), "x").dropped_by == "word_count_max"
    path.write_text(
        "name: g\nextends: c4\nrules:\n  - {name: terminal_punctuation, signal: rps_doc_word_count, op: '>=', value: 1}\n"
    )
    with pytest.raises(RecipeError, match="other kind"):
        load_recipe(str(path))
